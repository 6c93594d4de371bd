"""The ViT and the text transformer: fast path only, oracle, saving."""

import doctest

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp
from tfdp.clipping import fast
from tfdp.clipping import registry
from tfdp.layers import position_embedding
from tfdp.models import transformer

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def test_docstring_examples_run():
  for module in (transformer, position_embedding):
    result = doctest.testmod(module, extraglobs={"tf": tf})
    assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("build", [
    lambda: tfdp.models.vit((28, 28, 1), 10),
    lambda: tfdp.models.text_transformer(1000, 2),
], ids=["vit", "text"])
def test_every_layer_of_the_default_models_has_a_rule(build):
  model = build()
  tapped = fast.tapped_layers(model)
  assert len(tapped) > 10
  assert not [l.name for l in tapped if registry.rule_for(l) is None]
  kinds = {type(l).__name__ for l in tapped}
  assert {"EinsumDense", "PositionEmbedding", "LayerNormalization",
          "Dense"} <= kinds


def test_default_sizes():
  vit = tfdp.models.vit((28, 28, 1), 10)
  assert vit.get_layer("positions").table.shape == (49, 64)
  assert len([l for l in vit.layers
              if isinstance(l, tf.keras.layers.MultiHeadAttention)]) == 4
  text = tfdp.models.text_transformer(1000, 2)
  assert text.input_shape == (None, 128)
  assert len([l for l in text.layers
              if isinstance(l, tf.keras.layers.MultiHeadAttention)]) == 2


def test_vit_matches_the_oracle():
  tf.keras.utils.set_random_seed(0)
  model = tfdp.models.vit((8, 8, 1), 3, patch_size=4, width=8, depth=2,
                          num_heads=2)
  rng = np.random.default_rng(0)
  oracle.assert_fast_engine_matches(
      model, rng.normal(size=(5, 8, 8, 1)).astype(np.float32),
      rng.integers(0, 3, 5), LOSS)


def test_text_transformer_with_padding_matches_the_oracle():
  tf.keras.utils.set_random_seed(1)
  model = tfdp.models.text_transformer(20, 2, sequence_length=8, width=8,
                                       depth=2, num_heads=2)
  rng = np.random.default_rng(1)
  ids = rng.integers(1, 20, (5, 8))
  ids[0, 3:] = 0
  ids[2, 6:] = 0
  oracle.assert_fast_engine_matches(model, ids, rng.integers(0, 2, 5), LOSS)


def test_padding_is_masked():
  tf.keras.utils.set_random_seed(2)
  model = tfdp.models.text_transformer(20, 2, sequence_length=6, width=8,
                                       depth=1, num_heads=2)
  ids = np.array([[3, 4, 5, 0, 0, 0]])
  # Padding ignored: the padded sequence gives the logits of its prefix
  # alone (a model of length 3 with the same weights): padded keys get no
  # attention and the average skips them.
  prefix = tfdp.models.text_transformer(20, 2, sequence_length=3, width=8,
                                        depth=1, num_heads=2)
  for layer in prefix.layers:
    if layer.weights:
      source = model.get_layer(layer.name)
      if layer.name == "positions":
        layer.table.assign(source.table[:3])
      else:
        layer.set_weights(source.get_weights())
  np.testing.assert_allclose(model(ids), prefix(ids[:, :3]), atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
  model = tfdp.models.vit((8, 8, 1), 3, width=8, depth=1, num_heads=2)
  path = str(tmp_path / "vit.keras")
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  x = np.random.default_rng(3).normal(size=(2, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_arguments_are_checked():
  with pytest.raises(ValueError, match="num_heads"):
    tfdp.models.vit((28, 28, 1), 10, width=10, num_heads=4)
  with pytest.raises(ValueError, match="patch_size"):
    tfdp.models.vit((30, 30, 1), 10, patch_size=4)
  with pytest.raises(ValueError, match="padding_id"):
    tfdp.models.text_transformer(10, 2, padding_id=3)
  with pytest.raises(ValueError, match="static"):
    position_embedding.PositionEmbedding()(tf.keras.Input((None, 4)))
