"""The fast engine against one-example-at-a-time gradients.

Covers the Dense (any rank), Embedding and normalisation rules, the exact
fall-back for unregistered layers, nested models, and the refusals.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tests import scripts
from tfdp.clipping import fast
from tfdp.clipping.layers import _common

RTOL = 1e-5
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _check_against_oracle(model, x, y, loss=LOSS, sample_weight=None,
                          compiled=False):
  expected = oracle.per_example_gradients(model, x, y, loss, sample_weight)
  expected_norms = oracle.norms(expected)
  clip = float(np.median(expected_norms))
  run = lambda: fast.clipped_gradients(model, x, y, loss, clip,
                                       sample_weight=sample_weight)
  result = tf.function(run)() if compiled else run()
  oracle.assert_allclose_relative(result.norms, expected_norms, RTOL)
  oracle.assert_gradients_close(result.gradient_sum,
                                oracle.clipped_sum(expected, clip), RTOL)
  return result


class SquareScale(tf.keras.layers.Layer):
  """An unregistered layer: y = tanh(x) * w^2 + v (elementwise weights)."""

  def build(self, input_shape):
    self.w = self.add_weight("w", shape=input_shape[-1:],
                             initializer="ones")
    self.v = self.add_weight("v", shape=input_shape[-1:],
                             initializer="random_normal")

  def call(self, inputs):
    return tf.tanh(inputs) * tf.square(self.w) + self.v


def _inputs(rng, shape, batch=6):
  return rng.normal(size=(batch,) + shape).astype(np.float32)


@pytest.mark.parametrize("rank", [2, 3, 4])
@pytest.mark.parametrize("ghost", [True, False])
def test_dense_any_rank_both_strategies(rank, ghost, monkeypatch):
  monkeypatch.setattr(_common, "prefer_ghost_norm", lambda *a, **k: ghost)
  rng = np.random.default_rng(rank)
  tf.keras.utils.set_random_seed(rank)
  shape = (3, 4, 5)[3 - rank + 1:] if rank > 2 else (5,)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(4, activation="tanh", input_shape=shape),
      tf.keras.layers.Dense(3, use_bias=False),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3),
  ])
  _check_against_oracle(model, _inputs(rng, shape), rng.integers(0, 3, 6))


def test_embedding_with_repeated_tokens_and_sequence_loss():
  rng = np.random.default_rng(0)
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input((7,), dtype=tf.int32)
  hidden = tf.keras.layers.Embedding(5, 4)(inputs)  # few ids: many repeats
  outputs = tf.keras.layers.Dense(3)(hidden)
  model = tf.keras.Model(inputs, outputs)
  _check_against_oracle(model, rng.integers(0, 5, (6, 7)),
                        rng.integers(0, 3, (6, 7)))


@pytest.mark.parametrize("layer", [
    lambda: tf.keras.layers.LayerNormalization(),
    lambda: tf.keras.layers.LayerNormalization(axis=[1, 2]),
    lambda: tf.keras.layers.LayerNormalization(center=False),
    lambda: tf.keras.layers.GroupNormalization(groups=2),
    lambda: tf.keras.layers.GroupNormalization(groups=4, scale=False),
])
def test_normalization_layers(layer):
  rng = np.random.default_rng(1)
  tf.keras.utils.set_random_seed(1)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(4, input_shape=(3, 5)),
      layer(),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3),
  ])
  # Non-trivial gamma and beta.
  for weight in model.layers[1].trainable_weights:
    weight.assign(rng.normal(size=weight.shape))
  _check_against_oracle(model, _inputs(rng, (3, 5)), rng.integers(0, 3, 6))


class _DoubledGroupNormalization(tf.keras.layers.GroupNormalization):
  """A subclass with its own call: the rule must not assume Keras' math."""

  def call(self, inputs, mask=None):
    return super().call(2.0 * inputs, mask=mask)


def _count_layer_calls(monkeypatch) -> list:
  """A list that grows by one each time a rule falls back to the layer's call."""
  from tfdp.clipping.layers import normalization  # pylint: disable=import-outside-toplevel
  calls = []
  own_call = normalization.NormalizationRule.normalized
  monkeypatch.setattr(normalization.NormalizationRule, "normalized",
                      lambda self, tap, inputs: calls.append(1) or
                      own_call(self, tap, inputs))
  return calls


@pytest.mark.parametrize("layer,input_shape,own_statistics", [
    (lambda: tf.keras.layers.GroupNormalization(groups=4), (3, 4, 5), True),
    (lambda: tf.keras.layers.GroupNormalization(groups=1, center=False),
     (3, 5), True),
    # Channels first: the groups split axis 1 (4 channels), not the last.
    (lambda: tf.keras.layers.GroupNormalization(groups=2, axis=1),
     (4, 3, 5), True),
    (lambda: tf.keras.layers.GroupNormalization(groups=-1), (2, 3, 5), True),
    (lambda: _DoubledGroupNormalization(groups=2), (3, 5), False),
])
def test_group_normalization_statistics(layer, input_shape, own_statistics,
                                        monkeypatch):
  # The inputs sit far from zero (offset 30, spread about 1), where the
  # centred moments matter. A layer normalised as Keras' GroupNormalization
  # must not go through the layer's own call (the slow weighted moments);
  # a subclass with its own call must.
  calls = _count_layer_calls(monkeypatch)
  rng = np.random.default_rng(4)
  tf.keras.utils.set_random_seed(4)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(8, input_shape=input_shape),
      tf.keras.layers.Rescaling(1.0, offset=30.0),
      layer(),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3),
  ])
  for weight in model.layers[2].trainable_weights:
    weight.assign(rng.normal(size=weight.shape))
  _check_against_oracle(model, _inputs(rng, input_shape),
                        rng.integers(0, 3, 6))
  assert bool(calls) != own_statistics


def test_masked_group_normalization_keeps_the_layers_statistics(monkeypatch):
  # With a mask Keras weights the moments by it: the rule's own (unmasked)
  # statistics would be wrong, so the layer's own call must be used.
  calls = _count_layer_calls(monkeypatch)
  rng = np.random.default_rng(5)
  tf.keras.utils.set_random_seed(5)
  inputs = tf.keras.Input((3, 5))
  mask = tf.keras.Input((3, 8))
  hidden = tf.keras.layers.Dense(8)(inputs)
  norm = tf.keras.layers.GroupNormalization(groups=2)
  outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(
      norm(hidden, mask=mask)))
  model = tf.keras.Model([inputs, mask], outputs)
  for weight in norm.trainable_weights:
    weight.assign(rng.normal(size=weight.shape))
  masks = (rng.uniform(size=(6, 3, 8)) < 0.6).astype(np.float32)
  _check_against_oracle(model, [_inputs(rng, (3, 5)), masks],
                        rng.integers(0, 3, 6))
  assert calls


def test_mixed_registered_and_fallback_layers_warn_once(caplog):
  rng = np.random.default_rng(2)
  tf.keras.utils.set_random_seed(2)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(4, input_shape=(5,)),
      SquareScale(name="square_scale"),
      tf.keras.layers.Dense(3),
  ])
  fast._WARNED_FALLBACK.clear()  # pylint: disable=protected-access
  with caplog.at_level("WARNING"):
    _check_against_oracle(model, _inputs(rng, (5,)), rng.integers(0, 3, 6))
    _check_against_oracle(model, _inputs(rng, (5,)), rng.integers(0, 3, 6))
  warnings = [r for r in caplog.records if "square_scale" in r.getMessage()]
  assert len(warnings) == 1


def test_nested_models_and_sample_weights_inside_tf_function():
  rng = np.random.default_rng(3)
  tf.keras.utils.set_random_seed(3)
  inner = tf.keras.Sequential([
      tf.keras.layers.Dense(6, activation="relu", input_shape=(5,)),
      tf.keras.layers.LayerNormalization(),
  ], name="inner")
  inputs = tf.keras.Input((5,))
  hidden = inner(inputs)
  outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Dropout(0.0)(hidden))
  model = tf.keras.Model(inputs, outputs)
  weights = rng.uniform(0.2, 2.0, 6).astype(np.float32)
  _check_against_oracle(model, _inputs(rng, (5,)), rng.integers(0, 3, 6),
                        sample_weight=weights, compiled=True)


def test_frozen_layers_get_no_gradient_and_cost_nothing():
  rng = np.random.default_rng(4)
  frozen = tf.keras.layers.Dense(4, input_shape=(5,))
  model = tf.keras.Sequential([frozen, tf.keras.layers.Dense(3)])
  frozen.trainable = False
  result = _check_against_oracle(model, _inputs(rng, (5,)),
                                 rng.integers(0, 3, 6))
  assert len(result.gradient_sum) == 2  # the trainable Dense's kernel, bias


def test_batch_normalization_is_refused_with_alternatives():
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(4, input_shape=(5,)),
      tf.keras.layers.BatchNormalization(),
      tf.keras.layers.Dense(3),
  ])
  with pytest.raises(fast.UnsupportedLayerError,
                     match="batch.*GroupNormalization"):
    fast.clipped_gradients(model, np.zeros((2, 5), np.float32), [0, 1], LOSS,
                           1.0)


def test_frozen_batch_normalization_is_allowed():
  rng = np.random.default_rng(5)
  batch_norm = tf.keras.layers.BatchNormalization()
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(4, input_shape=(5,)), batch_norm,
      tf.keras.layers.Dense(3)])
  batch_norm.trainable = False  # inference mode: per-example
  _check_against_oracle(model, _inputs(rng, (5,)), rng.integers(0, 3, 6))


def test_shared_layer_is_refused():
  shared = tf.keras.layers.Dense(5)
  inputs = tf.keras.Input((5,))
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(shared(shared(
      inputs))))
  with pytest.raises(fast.UnsupportedLayerError, match="more than once"):
    fast.clipped_gradients(model, np.zeros((2, 5), np.float32), [0, 1], LOSS,
                           1.0)


def test_multi_output_unregistered_layer_is_refused():

  class Split(tf.keras.layers.Layer):

    def build(self, input_shape):
      self.w = self.add_weight("w", shape=input_shape[-1:])

    def call(self, inputs):
      return inputs * self.w, inputs

  inputs = tf.keras.Input((4,))
  left, right = Split()(inputs)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(left + right))
  with pytest.raises(fast.UnsupportedLayerError, match="fall-back cannot run"):
    fast.clipped_gradients(model, np.zeros((2, 4), np.float32), [0, 1], LOSS,
                           1.0)


def test_reduced_loss_is_refused():
  model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(5,))])
  reducing = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  with pytest.raises(ValueError, match="one loss value per example"):
    fast.clipped_gradients(model, np.zeros((2, 5), np.float32), [0, 1],
                           reducing, 1.0)


def test_layers_are_untapped_after_a_call():
  model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(5,))])
  fast.clipped_gradients(model, np.zeros((2, 5), np.float32), [0, 1], LOSS,
                         1.0)
  assert "call" not in vars(model.layers[0])


def test_an_empty_batch_of_static_size_gives_zero_gradients_in_its_own_process():
  # Grappler aborted such a process with SIGFPE before the fix; a Poisson
  # batch can be empty, and the DP-GAN's first step traces its exact shape.
  out = scripts.run_json_script(
      pathlib.Path(__file__).with_name("empty_batch_check.py"), timeout=120)
  assert out["total"] == 0.0
  assert out["shapes"] == [[4, 3], [3], [3, 2], [2]]
  assert out["norms"] == 0


def test_empty_batches_through_conv_and_group_norm():
  """TF's CPU Conv2D returns its input's shape for an empty batch.

  Plain Keras then fails in the next GroupNormalization; the engine must
  not run the model on no examples, in a traced step (unknown batch size,
  as Poisson batches are) or eagerly, and still clip non-empty batches.
  """
  model = tf.keras.Sequential([
      tf.keras.Input((6, 6, 3)), tf.keras.layers.Conv2D(8, 3),
      tf.keras.layers.GroupNormalization(4), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3)])
  step = tf.function(
      lambda x, y: fast.clipped_gradients(model, x, y, LOSS, 1.0,
                                          return_predictions=True),
      input_signature=[tf.TensorSpec([None, 6, 6, 3]),
                       tf.TensorSpec([None], tf.int64)])
  rng = np.random.default_rng(0)
  for run in (step, lambda x, y: fast.clipped_gradients(
      model, x, y, LOSS, 1.0, return_predictions=True)):
    for size in (3, 0, 2, 0):
      x = rng.normal(size=(size, 6, 6, 3)).astype(np.float32)
      y = rng.integers(0, 3, size)
      result, predictions = run(x, y)
      assert predictions.shape == (size, 3)
      assert result.norms.shape == (size,)
      assert result.per_example_losses.shape == (size,)
      total = sum(float(tf.reduce_sum(tf.abs(g))) for g in result.gradient_sum)
      assert (total == 0.0) == (size == 0)
      if size:  # Clipped to C = 1 or below, as without the guard.
        expected = oracle.per_example_gradients(model, x, y, LOSS)
        oracle.assert_allclose_relative(result.norms, oracle.norms(expected),
                                        1e-5)
  # Per-layer clipping (the DP-GAN's adaptive mode) likewise.
  per_layer = tf.function(
      lambda x, y: fast.per_layer_clipped_gradients(
          model, x, y, LOSS, {l.name: 1.0 for l in fast.tapped_layers(model)}),
      input_signature=step.input_signature)
  for size in (2, 0):
    result = per_layer(rng.normal(size=(size, 6, 6, 3)).astype(np.float32),
                       rng.integers(0, 3, size))
    assert result.norms.shape == (size,)
    total = sum(float(tf.reduce_sum(tf.abs(g))) for g in result.gradient_sum)
    assert (total == 0.0) == (size == 0)
