"""The "public_batch" normalisation choice of the architectures."""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp
from tfdp import models
from tfdp.clipping import fast
from tfdp.layers import public_batch_norm

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _public_layers(model):
  return [l for l in model.layers
          if isinstance(l, tfdp.layers.PublicBatchNormalization)]


@pytest.mark.parametrize("build,count", [
    # stem, 8 blocks x 2, 3 projection shortcuts: one norm after each conv.
    (lambda: models.resnet18((16, 16, 3), width=0.125, norm="public_batch"),
     1 + 8 * 2 + 3),
    # WRN-10-1: 3 blocks x 2 pre-activations, a final one.
    (lambda: models.wide_resnet(10, 1, (16, 16, 3), norm="public_batch"),
     3 * 2 + 1),
    (lambda: models.lenet5("public_batch", (8, 8, 1)), 2),
])
def test_public_batch_choice_builds_and_is_tapped(build, count):
  model = build()
  layers = _public_layers(model)
  assert len(layers) == count
  batch_norm = tf.keras.layers.BatchNormalization
  assert not [l for l in model.layers if l.__class__ is batch_norm]
  assert not _layers_of_group(model)
  tapped = {l.name for l in fast.tapped_layers(model)}
  assert {l.name for l in layers} <= tapped
  # A normalised convolution has no bias: the layer's offset replaces it.
  assert not any(c.use_bias for c in model.layers
                 if isinstance(c, tf.keras.layers.Conv2D))


def _layers_of_group(model):
  return [l for l in model.layers
          if isinstance(l, tf.keras.layers.GroupNormalization)]


def test_resnet18_public_batch_has_the_published_parameter_count():
  model = models.resnet18(norm="public_batch")
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert trainable == 11_173_962   # as with BatchNorm: gamma and beta


@pytest.mark.parametrize("build,input_shape", [
    (lambda: models.lenet5("public_batch", (8, 8, 1), activation="tanh",
                           dense_norm=True), (8, 8, 1)),
    (lambda: models.resnet18((8, 8, 3), width=0.0625, norm="public_batch"),
     (8, 8, 3)),
], ids=["lenet5", "resnet18"])
def test_fast_clipped_sum_matches_oracle_with_public_statistics(build,
                                                                input_shape):
  tf.keras.utils.set_random_seed(5)
  model = build()
  rng = np.random.default_rng(5)
  public = rng.uniform(size=(16,) + input_shape).astype(np.float32)
  x = rng.uniform(size=(5,) + input_shape).astype(np.float32)
  y = rng.integers(0, 10, 5)
  public = public_batch_norm.check_public_data(model, public)
  public_batch_norm.update_public_statistics(model, public)
  # One example at a time: with the statistics from the public batch, each
  # example's gradient depends on that example alone.
  oracle.assert_fast_engine_matches(model, x, y, LOSS, rtol=1e-4,
                                    in_function=False)


def test_private_training_step_with_public_batch_lenet5():
  tf.keras.utils.set_random_seed(6)
  rng = np.random.default_rng(6)
  public = rng.uniform(size=(8, 8, 8, 1)).astype(np.float32)
  x = rng.uniform(size=(12, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, 12)
  model = tfdp.make_private(models.lenet5("public_batch", (8, 8, 1)),
                            public_data=public)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0,
      expected_batch_size=4), loss=LOSS, metrics=["accuracy"])
  history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][0])
  assert model.predict(x, verbose=0).shape == (12, 10)


def test_public_batch_model_without_public_data_is_refused():
  model = models.lenet5("public_batch", (8, 8, 1))
  with pytest.raises(ValueError, match="public"):
    tfdp.make_private(model)
