"""Gaussian noise augmentation in make_private: what the model sees, and DP.

Tolerances are derived from the sample size: an estimate of the std from m
draws has relative standard error 1 / sqrt(2 m), a sample correlation of m
independent pairs has standard error 1 / sqrt(m); the bounds are 6 standard
errors (two-sided false-failure rate ~2e-9 each).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.clipping import fast

SIGMA = 0.3
BATCH = 64


class Recorder(tf.keras.layers.Layer):
  """Passes its input through and keeps the last batch it was called with."""

  def build(self, input_shape):
    self.seen = self.add_weight(
        "seen", shape=[BATCH] + list(input_shape[1:]), trainable=False,
        initializer="zeros")

  def call(self, inputs):
    self.seen.assign(inputs)
    return inputs


def _private_model():
  tf.keras.utils.set_random_seed(0)
  recorder = Recorder()
  model = tf.keras.Sequential([
      tf.keras.Input((8, 8, 1)), recorder, tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(10)])
  model = tfdp.make_private(
      model, augmentation=tfdp.robust.GaussianAugmentation(SIGMA))
  model.compile(
      optimizer=tfdp.optimizers.DPSGD(
          learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.0,
          expected_batch_size=BATCH),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, reduction="none"))
  return model, recorder


def _one_step(model, x, y):
  model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def test_model_sees_sigma_noise_fresh_per_step_and_none_at_inference(digits):
  x, y = digits.train.x[:BATCH], digits.train.y[:BATCH]
  model, recorder = _private_model()
  _one_step(model, x, y)
  first = recorder.seen.numpy() - x
  _one_step(model, x, y)
  second = recorder.seen.numpy() - x
  m = first.size
  for noise in (first, second):
    assert abs(noise.std() / SIGMA - 1) < 6 / math.sqrt(2 * m)
    assert abs(noise.mean()) < 6 * SIGMA / math.sqrt(m)
  # Fresh per step, and per example: no correlation between two steps' draws
  # or between two examples' draws within one step.
  assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < (
      6 / math.sqrt(m))
  rows = first.reshape(BATCH, -1)
  assert abs(np.corrcoef(rows[0::2].ravel(), rows[1::2].ravel())[0, 1]) < (
      6 / math.sqrt(m / 2))
  # Inference adds nothing: predict, evaluate and a plain call see x itself.
  model.predict(x, batch_size=BATCH, verbose=0)
  np.testing.assert_array_equal(recorder.seen.numpy(), x)
  model(x)
  np.testing.assert_array_equal(recorder.seen.numpy(), x)


def test_one_example_change_stays_in_its_own_clipped_gradient(digits):
  """Given the augmentation noise, neighbours differ by at most 2C."""
  augmentation = tfdp.robust.GaussianAugmentation(SIGMA)
  tf.keras.utils.set_random_seed(1)
  model = tf.keras.Sequential([
      tf.keras.Input((8, 8, 1)),
      tf.keras.layers.Conv2D(4, 3, activation="tanh"),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
  x, y = digits.train.x[:16], digits.train.y[:16]
  changed = x.copy()
  changed[5] = 1.0 - changed[5]
  loss = tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction="none")
  clip = 0.5
  results, augmented = [], []
  for batch in (x, changed):
    tf.random.set_seed(7)  # The same augmentation noise for both batches.
    noisy = augmentation.perturb(model, batch, y).numpy()
    augmented.append(noisy)
    results.append(fast.clipped_gradients(model, noisy, y, loss, clip))
  # Each augmented example depends on its own example only.
  others = np.arange(16) != 5
  np.testing.assert_array_equal(augmented[0][others], augmented[1][others])
  np.testing.assert_allclose(augmented[1][5] - augmented[0][5],
                             changed[5] - x[5], atol=1e-6)
  np.testing.assert_allclose(results[0].norms.numpy()[others],
                             results[1].norms.numpy()[others], rtol=1e-5)
  difference = math.sqrt(sum(
      float(tf.reduce_sum(tf.square(a - b)))
      for a, b in zip(results[0].gradient_sum, results[1].gradient_sum)))
  assert 0 < difference <= 2 * clip + 1e-5


def test_perturb_is_fresh_gaussian_per_call():
  augmentation = tfdp.robust.GaussianAugmentation(0.5)
  x = tf.zeros([4000, 3])
  first = augmentation.perturb(None, x).numpy()
  second = augmentation.perturb(None, x).numpy()
  m = first.size
  assert abs(first.std() / 0.5 - 1) < 6 / math.sqrt(2 * m)
  assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < (
      6 / math.sqrt(m))


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), "0.3"])
def test_rejects_bad_sigma(sigma):
  with pytest.raises(ValueError, match="sigma"):
    tfdp.robust.GaussianAugmentation(sigma)


def test_make_private_rejects_augmentation_without_perturb():
  model = tf.keras.Sequential([tf.keras.Input((2,)),
                               tf.keras.layers.Dense(2)])
  with pytest.raises(ValueError, match="augmentation must have a perturb"):
    tfdp.make_private(model, augmentation=0.25)


def test_perturb_rejects_integer_and_nested_inputs():
  augmentation = tfdp.robust.GaussianAugmentation(0.1)
  with pytest.raises(ValueError, match="floating-point"):
    augmentation.perturb(None, tf.zeros([2, 2], tf.int32))
  with pytest.raises(ValueError, match="one tensor"):
    augmentation.perturb(None, (tf.zeros([2, 2]), tf.zeros([2, 2])))
