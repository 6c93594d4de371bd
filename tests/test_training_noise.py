"""The DP noise a training step applies, measured through model.fit.

Each test trains one step of a model with over 5,000 weights on a loss of
zero gradient (tests/noise_stats.py): the weight change is the step's noise
alone, and its standard deviation must be lr * sigma * C / B, whichever path
computes the clipped sum. Noise added twice, once per chunk, or not at all
fails these tests. MirroredStrategy: tests/test_private.py (fresh process).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import noise_stats
import tfdp


def _optimizer():
  return tfdp.optimizers.DPSGD(
      learning_rate=noise_stats.LEARNING_RATE,
      l2_norm_clip=noise_stats.CLIP, noise_multiplier=noise_stats.SIGMA,
      expected_batch_size=noise_stats.BATCH)


def _data(shape=(40,)):
  rng = np.random.default_rng(0)
  return (rng.normal(size=(noise_stats.BATCH,) + shape).astype(np.float32),
          rng.integers(0, 10, noise_stats.BATCH))


def _dense_model():
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([
      tf.keras.layers.Dense(120, activation="tanh", input_shape=(40,)),
      tf.keras.layers.Dense(10)])  # 6,130 weights.


def _fit_step(model, x, y, **private_kwargs):
  model = tfdp.make_private(model, **private_kwargs)
  model.compile(optimizer=_optimizer(), loss=noise_stats.ZeroGradientLoss())
  return noise_stats.weight_change(model, x, y)


@pytest.mark.parametrize("physical_batch_size", [None, 3],
                         ids=["one_chunk", "three_chunks"])
def test_make_private_adds_the_noise_once_per_logical_batch(
    physical_batch_size):
  x, y = _data()
  noise_stats.assert_noise_std(_fit_step(
      _dense_model(), x, y, physical_batch_size=physical_batch_size))


def test_exact_path_without_make_private_adds_the_noise_once():
  x, y = _data()
  model = _dense_model()
  model.compile(optimizer=_optimizer(), loss=noise_stats.ZeroGradientLoss())
  noise_stats.assert_noise_std(noise_stats.weight_change(model, x, y))


def test_public_batch_option_adds_the_noise_once():
  x, y = _data()
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(120, input_shape=(40,)),
      tfdp.layers.PublicBatchNormalization(),
      tf.keras.layers.Activation("tanh"),
      tf.keras.layers.Dense(10)])
  public = np.random.default_rng(1).normal(size=(16, 40)).astype(np.float32)
  noise_stats.assert_noise_std(_fit_step(model, x, y, public_data=public))


def test_adversarial_option_adds_the_noise_once():
  x, y = _data()
  adversarial = tfdp.robust.AdversarialTraining(epsilon=0.1, steps=2)
  noise_stats.assert_noise_std(_fit_step(_dense_model(), x, y,
                                         adversarial=adversarial))


def test_gaussian_augmentation_option_adds_the_noise_once():
  # The augmentation noise is on the inputs, which a zero-gradient loss
  # ignores: the weight change is still the DP noise alone, added once.
  x, y = _data()
  augmentation = tfdp.robust.GaussianAugmentation(sigma=0.5)
  noise_stats.assert_noise_std(_fit_step(_dense_model(), x, y,
                                         augmentation=augmentation))


@pytest.mark.parametrize("physical_batch_size", [None, 3],
                         ids=["one_chunk", "three_chunks"])
def test_augmentation_multiplicity_adds_the_noise_once_per_example_batch(
    physical_batch_size):
  # 4 copies of each example: the noise is calibrated to the B examples (not
  # the 4 B copies) and added once per logical batch.
  x, y = _data()
  augment = lambda rows: rows + tf.random.normal(tf.shape(rows))
  noise_stats.assert_noise_std(_fit_step(
      _dense_model(), x, y, augmult=4, augment=augment,
      physical_batch_size=physical_batch_size))


@pytest.mark.parametrize("extender", ["DOPE", "Mirror"])
def test_public_gradient_extenders_add_the_noise_once(extender):
  # The zero-gradient loss makes p = 0 too: the change is the noise alone,
  # scaled by beta for Mirror-GD.
  x, y = _data()
  public_x, public_y = _data()
  public = getattr(tfdp.public_gradients, extender)(public_x, public_y,
                                                    batch_size=4)
  beta = getattr(public, "private_weight", 1.0)
  noise_stats.assert_noise_std(
      _fit_step(_dense_model(), x, y, public_gradient=public),
      beta * noise_stats.EXPECTED_STD)


def test_conv_model_adds_the_noise_once():
  # The conv rule's paths (ghost and explicit) end in the same noisy average.
  x, y = _data(shape=(8, 8, 3))
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([
      tf.keras.layers.Conv2D(32, 3, activation="tanh", input_shape=(8, 8, 3)),
      tf.keras.layers.Conv2D(16, 3, strides=2, activation="tanh"),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(10)])  # 9,978 weights.
  noise_stats.assert_noise_std(_fit_step(model, x, y))


def test_each_step_draws_fresh_noise():
  x, y = _data()
  model = tfdp.make_private(_dense_model())
  model.compile(optimizer=_optimizer(), loss=noise_stats.ZeroGradientLoss())
  first = noise_stats.weight_change(model, x, y)
  second = noise_stats.weight_change(model, x, y)
  noise_stats.assert_noise_std(second)
  # Independent draws: the correlation of d coordinate pairs is about
  # N(0, 1/d); noise reused from step to step would give 1.
  correlation = np.corrcoef(first, second)[0, 1]
  assert abs(correlation) < noise_stats.Z / np.sqrt(first.size)
