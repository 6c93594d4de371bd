"""Augmentation multiplicity in the fast engine against the oracle.

With K copies per example, g_i is the mean of the gradients of example i's
K rows, each computed alone (`oracle.mean_over_copies`), and clipping
applies to that mean. Every rule is covered, on both of its strategies.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tfdp.clipping import fast
from tfdp.clipping.layers import _common

RTOL = 1e-5
COPIES = 3
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


class SquareScale(tf.keras.layers.Layer):
  """An unregistered layer (exact fall-back): y = x * w^2."""

  def build(self, input_shape):
    self.w = self.add_weight("w", shape=input_shape[-1:],
                             initializer="random_normal")

  def call(self, inputs):
    return inputs * tf.square(self.w)


def _mlp():
  return tf.keras.Sequential([
      tf.keras.Input((5,)),
      tf.keras.layers.Dense(6, activation="tanh"),
      SquareScale(),
      tf.keras.layers.Dense(3),
  ])


def _conv_net():
  return tf.keras.Sequential([
      tf.keras.Input((7, 7, 2)),
      tf.keras.layers.Conv2D(4, 3, padding="same", activation="tanh"),
      tf.keras.layers.GroupNormalization(groups=2),
      tf.keras.layers.DepthwiseConv2D(2, strides=2, activation="tanh"),
      tf.keras.layers.Conv2D(4, 2, groups=2, dilation_rate=2),
      tf.keras.layers.Conv2D(2, 1, strides=2),  # strided 1x1: own code path
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3),
  ])


def _sequence_model():
  inputs = tf.keras.Input((4,), dtype=tf.int32)
  hidden = tf.keras.layers.Embedding(5, 4)(inputs)  # few ids: repeats
  hidden = tf.keras.layers.LayerNormalization()(hidden)
  hidden = tf.keras.layers.Dense(4, activation="tanh")(hidden)
  outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(hidden))
  return tf.keras.Model(inputs, outputs)


def _attention_model():
  inputs = tf.keras.Input((4,), dtype=tf.int32)
  hidden = tf.keras.layers.Embedding(5, 4)(inputs)
  hidden = tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=2)(
      hidden, hidden)  # EinsumDense projections
  outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(hidden))
  return tf.keras.Model(inputs, outputs)


_MODELS = {"mlp": (_mlp, "float"), "conv": (_conv_net, "float"),
           "sequence": (_sequence_model, "ids"),
           "attention": (_attention_model, "ids")}


def _data(model, kind, examples, seed):
  rng = np.random.default_rng(seed)
  shape = (examples * COPIES,) + tuple(model.input_shape[1:])
  x = (rng.integers(0, 5, shape) if kind == "ids" else
       rng.normal(size=shape).astype(np.float32))
  y = np.repeat(rng.integers(0, 3, examples), COPIES)  # labels per example
  return x, y


def _check(model, x, y, compiled=False, sample_weight=None):
  expected = oracle.mean_over_copies(
      oracle.per_example_gradients(model, x, y, LOSS, sample_weight), COPIES)
  expected_norms = oracle.norms(expected)
  clip = float(np.median(expected_norms))

  def run(x, y):
    return fast.clipped_gradients(model, x, y, LOSS, clip,
                                  sample_weight=sample_weight,
                                  copies_per_example=COPIES)

  if compiled:  # As in fit: traced once, batch size unknown.
    run = tf.function(run, input_signature=[
        tf.TensorSpec((None,) + tuple(x.shape[1:]), tf.as_dtype(x.dtype)),
        tf.TensorSpec((None,), tf.as_dtype(y.dtype))])
  result = run(x, y)
  assert result.norms.shape == (len(x) // COPIES,)
  assert np.sum(expected_norms > clip) >= 1  # some examples are clipped
  oracle.assert_allclose_relative(result.norms, expected_norms, RTOL)
  oracle.assert_gradients_close(result.gradient_sum,
                                oracle.clipped_sum(expected, clip), RTOL)
  return result


@pytest.mark.parametrize("path", ["ghost", "explicit", "explicit-recomputed"])
@pytest.mark.parametrize("name", sorted(_MODELS))
def test_mean_over_copies_then_clip_matches_oracle(name, path, monkeypatch):
  monkeypatch.setattr(_common, "prefer_ghost_norm",
                      lambda *a, **k: path == "ghost")
  monkeypatch.setattr(_common, "keep_per_example_gradients",
                      lambda *a: path == "explicit")
  tf.keras.utils.set_random_seed(len(name))
  make, kind = _MODELS[name]
  model = make()
  x, y = _data(model, kind, examples=5, seed=len(name))
  _check(model, x, y)


@pytest.mark.parametrize("name", sorted(_MODELS))
def test_inside_tf_function_with_unknown_batch(name):
  tf.keras.utils.set_random_seed(7)
  make, kind = _MODELS[name]
  model = make()
  x, y = _data(model, kind, examples=4, seed=7)
  _check(model, x, y, compiled=True)


def test_sample_weights_weigh_each_copy():
  tf.keras.utils.set_random_seed(8)
  model = _mlp()
  x, y = _data(model, "float", examples=4, seed=8)
  weights = np.random.default_rng(8).uniform(0.2, 2.0, len(x)).astype(
      np.float32)
  _check(model, x, y, sample_weight=weights)


@pytest.mark.parametrize("name", sorted(_MODELS))
def test_identical_copies_give_the_plain_clipped_sum(name):
  """K equal copies of each example: the mean is the example's gradient."""
  tf.keras.utils.set_random_seed(9)
  make, kind = _MODELS[name]
  model = make()
  x, y = _data(model, kind, examples=4, seed=9)
  x, y = x[::COPIES], y[::COPIES]
  plain = fast.clipped_gradients(model, x, y, LOSS, 0.5)
  repeated = fast.clipped_gradients(
      model, np.repeat(x, COPIES, axis=0), np.repeat(y, COPIES), LOSS, 0.5,
      copies_per_example=COPIES)
  oracle.assert_allclose_relative(repeated.norms, plain.norms, RTOL)
  oracle.assert_allclose_relative(repeated.per_example_losses,
                                  plain.per_example_losses, RTOL)
  oracle.assert_gradients_close(repeated.gradient_sum, plain.gradient_sum,
                                RTOL)


def test_rows_must_be_a_multiple_of_the_copies():
  model = _mlp()
  with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of 3"):
    fast.clipped_gradients(model, np.zeros((4, 5), np.float32),
                           np.zeros(4, np.int64), LOSS, 1.0,
                           copies_per_example=COPIES)


@pytest.mark.parametrize("copies", [0, 1.5, -2])
def test_copies_must_be_a_positive_integer(copies):
  with pytest.raises(ValueError, match="copies_per_example"):
    fast.clipped_gradients(_mlp(), np.zeros((3, 5), np.float32),
                           np.zeros(3, np.int64), LOSS, 1.0,
                           copies_per_example=copies)
