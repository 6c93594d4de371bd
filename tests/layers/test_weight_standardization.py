"""WeightStandardizedConv2D: the layer, and its clipping rule vs the oracle."""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp
from tfdp.clipping import fast
from tfdp.clipping.layers import _common
from tfdp.clipping.layers import weight_standardized_conv

WSConv = tfdp.layers.WeightStandardizedConv2D
RTOL = 1e-5
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _model():
  tf.keras.utils.set_random_seed(3)
  return tf.keras.Sequential([
      tf.keras.Input((7, 7, 2)),
      WSConv(4, 3, padding="same", activation="tanh", use_bias=True),
      WSConv(3, 2, strides=2, dilation_rate=1, activation="tanh",
             use_bias=False),
      WSConv(3, 1, strides=2),  # strided 1x1: the rule's subsampled form
      WSConv(2, 2, dilation_rate=2, padding="same", epsilon=1e-3),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3)])


def test_the_layer_convolves_with_the_standardised_kernel():
  layer = WSConv(5, 3, use_bias=False, epsilon=1e-4)
  x = tf.random.normal([2, 6, 6, 3])
  y = layer(x)
  kernel = layer.kernel.numpy().reshape(-1, 5)
  standardized = ((kernel - kernel.mean(0)) /
                  np.sqrt(kernel.var(0) + 1e-4)).reshape(3, 3, 3, 5)
  expected = tf.nn.conv2d(x, standardized, 1, "VALID")
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_the_layer_survives_model_save_and_load(tmp_path):
  model = _model()
  x = np.random.default_rng(0).normal(size=(2, 7, 7, 2)).astype(np.float32)
  model.save(tmp_path / "model.keras")
  loaded = tf.keras.models.load_model(tmp_path / "model.keras")
  np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)
  assert loaded.layers[3].epsilon == 1e-3


def test_groups_and_bad_epsilon_are_refused():
  with pytest.raises(ValueError, match="groups=1 only"):
    WSConv(4, 3, groups=2)
  with pytest.raises(ValueError, match="epsilon"):
    WSConv(4, 3, epsilon=0.0)


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("path", ["ghost", "explicit", "explicit-recomputed"])
def test_rule_matches_oracle_with_copies_and_a_center(path, copies,
                                                      monkeypatch):
  monkeypatch.setattr(_common, "prefer_ghost_norm",
                      lambda *a, **k: path == "ghost")
  monkeypatch.setattr(_common, "keep_per_example_gradients",
                      lambda *a: path == "explicit")
  model = _model()
  assert all(isinstance(tfdp.clipping.registry.rule_for(layer),
                        weight_standardized_conv.WeightStandardizedConvRule)
             for layer in model.layers[:4])  # not the exact fall-back
  rng = np.random.default_rng(copies)
  x = rng.normal(size=(5 * copies, 7, 7, 2)).astype(np.float32)
  y = np.repeat(rng.integers(0, 3, 5), copies)
  per_example = oracle.mean_over_copies(
      oracle.per_example_gradients(model, x, y, LOSS), copies)
  plain_clip = float(np.median(oracle.norms(per_example)))
  plain = fast.clipped_gradients(model, x, y, LOSS, plain_clip,
                                 copies_per_example=copies)
  oracle.assert_allclose_relative(plain.norms, oracle.norms(per_example),
                                  RTOL)
  oracle.assert_gradients_close(plain.gradient_sum,
                                oracle.clipped_sum(per_example, plain_clip),
                                RTOL)
  scale = plain_clip / np.sqrt(model.count_params())
  center = [scale * rng.normal(size=v.shape).astype(np.float32)
            for v in model.trainable_variables]
  centered = oracle.minus(per_example, center)
  clip = float(np.median(oracle.norms(centered)))
  result = tf.function(lambda x, y: fast.clipped_gradients(
      model, x, y, LOSS, clip, copies_per_example=copies, center=center))(
          x, y)
  oracle.assert_allclose_relative(result.norms, oracle.norms(centered), RTOL)
  oracle.assert_gradients_close(result.gradient_sum,
                                oracle.clipped_sum(centered, clip), RTOL)
