"""The reference clipping path against one-example-at-a-time gradients."""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tfdp import clipping

RTOL = 1e-5
NONE = tf.keras.losses.Reduction.NONE


def _classifier_loss():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                       reduction=NONE)


def _mlp():
  return tf.keras.Sequential([
      tf.keras.layers.Flatten(input_shape=(4, 4, 1)),
      tf.keras.layers.Dense(8, activation="tanh"),
      tf.keras.layers.Dense(3),
  ])


def _cnn():
  return tf.keras.Sequential([
      tf.keras.layers.Conv2D(4, 3, strides=2, padding="same",
                             activation="tanh", input_shape=(8, 8, 2)),
      tf.keras.layers.MaxPooling2D(),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3),
  ])


def _sequence_model():
  """Embedding + Dense on a rank-3 input + per-time-step loss."""
  inputs = tf.keras.Input((5,), dtype=tf.int32)
  hidden = tf.keras.layers.Embedding(11, 4)(inputs)
  hidden = tf.keras.layers.Dense(6, activation="tanh")(hidden)
  outputs = tf.keras.layers.Dense(3)(hidden)
  return tf.keras.Model(inputs, outputs)


def _batch(model_name, rng, batch=6):
  if model_name == "mlp":
    return _mlp(), rng.normal(size=(batch, 4, 4, 1)).astype(np.float32), \
        rng.integers(0, 3, batch)
  if model_name == "cnn":
    return _cnn(), rng.normal(size=(batch, 8, 8, 2)).astype(np.float32), \
        rng.integers(0, 3, batch)
  return _sequence_model(), rng.integers(0, 11, (batch, 5)), \
      rng.integers(0, 3, (batch, 5))


@pytest.mark.parametrize("model_name", ["mlp", "cnn", "sequence"])
def test_clipped_sum_matches_one_example_at_a_time(model_name):
  rng = np.random.default_rng(0)
  tf.keras.utils.set_random_seed(0)
  model, x, y = _batch(model_name, rng)
  loss = _classifier_loss()
  expected = oracle.per_example_gradients(model, x, y, loss)
  expected_norms = oracle.norms(expected)
  # A clip norm between the smallest and largest norm clips some examples
  # and leaves others whole.
  clip = float(np.median(expected_norms))
  result = clipping.clipped_gradients(model, x, y, loss, l2_norm_clip=clip)

  oracle.assert_allclose_relative(result.norms, expected_norms, RTOL)
  for actual, reference in zip(result.gradient_sum,
                               oracle.clipped_sum(expected, clip)):
    oracle.assert_allclose_relative(actual, reference, RTOL)
  np.testing.assert_allclose(result.per_example_losses,
                             [np.mean(loss(y[i:i + 1], model(x[i:i + 1])))
                              for i in range(len(x))], rtol=1e-5)


def test_sample_weight_scales_losses_before_clipping():
  rng = np.random.default_rng(1)
  model, x, y = _batch("mlp", rng)
  weights = rng.uniform(0.1, 3.0, len(x)).astype(np.float32)
  loss = _classifier_loss()
  expected = oracle.per_example_gradients(model, x, y, loss, weights)
  result = clipping.clipped_gradients(model, x, y, loss, 0.5,
                                      sample_weight=weights)
  for actual, reference in zip(result.gradient_sum,
                               oracle.clipped_sum(expected, 0.5)):
    oracle.assert_allclose_relative(actual, reference, RTOL)


def test_each_clipped_gradient_has_norm_at_most_clip():
  rng = np.random.default_rng(2)
  model, x, y = _batch("mlp", rng, batch=1)
  for clip in [1e-3, 0.1, 10.0]:
    result = clipping.clipped_gradients(model, x, y, _classifier_loss(), clip)
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in result.gradient_sum))
    assert norm <= clip * (1 + 1e-5)
    np.testing.assert_allclose(norm, min(clip, float(result.norms[0])),
                               rtol=1e-5)


def test_one_example_does_not_change_another_examples_contribution():
  """Per-example independence: replacing example 0 leaves the rest alone."""
  rng = np.random.default_rng(3)
  model, x, y = _batch("cnn", rng)
  loss = _classifier_loss()
  first = clipping.clipped_gradients(model, x, y, loss, 0.1)
  x_changed = x.copy()
  x_changed[0] = rng.normal(size=x[0].shape) * 10
  second = clipping.clipped_gradients(model, x_changed, y, loss, 0.1)
  np.testing.assert_allclose(first.norms[1:], second.norms[1:], rtol=1e-6)
  assert not np.isclose(first.norms[0], second.norms[0])
  # The sums differ by exactly example 0's two clipped contributions.
  only_first = clipping.clipped_gradients(model, x[:1], y[:1], loss, 0.1)
  only_changed = clipping.clipped_gradients(model, x_changed[:1], y[:1], loss,
                                            0.1)
  for a, b, c, d in zip(first.gradient_sum, second.gradient_sum,
                        only_first.gradient_sum, only_changed.gradient_sum):
    np.testing.assert_allclose(a - c, b - d, atol=1e-6)


def test_clip_factors():
  norms = tf.constant([0.0, 0.5, 1.0, 4.0])
  np.testing.assert_allclose(clipping.clip_factors(norms, 1.0),
                             [1.0, 1.0, 1.0, 0.25])


def test_reduced_loss_is_refused_with_advice():
  rng = np.random.default_rng(4)
  model, x, y = _batch("mlp", rng)
  reducing = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  with pytest.raises(ValueError, match="reduction=tf.keras.losses.Reduction"):
    clipping.clipped_gradients(model, x, y, reducing, 1.0)


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan")])
def test_bad_clip_norm_is_refused(clip):
  rng = np.random.default_rng(5)
  model, x, y = _batch("mlp", rng)
  with pytest.raises(ValueError, match="l2_norm_clip"):
    clipping.clipped_gradients(model, x, y, _classifier_loss(), clip)
