"""make_private: model.fit with the fast engine, accumulation, replicas."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import noise_stats
from tests import oracle
import tfdp

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _model(regularizer=None):
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([
      tf.keras.layers.Dense(6, activation="tanh", input_shape=(5,),
                            kernel_regularizer=regularizer),
      tf.keras.layers.LayerNormalization(),
      tf.keras.layers.Dense(3),
  ])


def _data(n=8, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)


def _one_noiseless_step(model, x, y, clip, **private_kwargs):
  model = tfdp.make_private(model, **private_kwargs)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=1.0, l2_norm_clip=clip, noise_multiplier=0.0,
      expected_batch_size=len(x)), loss=LOSS)
  before = [v.numpy() for v in model.trainable_variables]
  model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
  return [b - v.numpy() for b, v in zip(before, model.trainable_variables)]


@pytest.mark.parametrize("physical_batch_size", [None, 3, 8, 20])
def test_step_applies_exact_clipped_average(physical_batch_size):
  x, y = _data()
  model = _model()
  expected = oracle.clipped_sum(oracle.per_example_gradients(model, x, y, LOSS),
                                0.2)
  change = _one_noiseless_step(model, x, y, 0.2,
                               physical_batch_size=physical_batch_size)
  oracle.assert_gradients_close(change, [e / len(x) for e in expected], 1e-5)


@pytest.mark.parametrize("physical_batch_size", [3, 4, 20])
def test_static_batch_chunks_match_the_oracle(physical_batch_size):
  # A batch of static size 8 in chunks of 3, 3 and 2 (a ragged last one
  # after the loop), of 4 and 4 (the loop alone), or in one chunk (P > B).
  x, y = _data()
  model = tfdp.make_private(_model(), physical_batch_size=physical_batch_size)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=1.0, l2_norm_clip=0.2, noise_multiplier=0.0,
      expected_batch_size=len(x)), loss=LOSS,
                metrics=[tf.keras.metrics.SparseCategoricalCrossentropy(
                    from_logits=True)])
  expected = oracle.clipped_sum(
      oracle.per_example_gradients(model, x, y, LOSS), 0.2)
  # The metric is computed from the step's predictions, chunk by chunk.
  expected_metric = float(tf.reduce_mean(LOSS(y, model(x))))
  before = [v.numpy() for v in model.trainable_variables]
  logs = tf.function(lambda x, y: model.train_step((x, y)))(
      tf.constant(x), tf.constant(y))
  change = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
  oracle.assert_gradients_close(change, [e / len(x) for e in expected], 1e-5)
  np.testing.assert_allclose(
      float(logs["sparse_categorical_crossentropy"]), expected_metric,
      rtol=1e-5)


@pytest.mark.parametrize("physical_batch_size", [None, 3])
def test_an_empty_batch_of_unknown_size_is_a_step_with_a_zero_sum(
    physical_batch_size):
  # Poisson sampling gives empty batches; the step is counted, and without
  # noise it changes no weight.
  model = tfdp.make_private(_model(), physical_batch_size=physical_batch_size)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=1.0, l2_norm_clip=1.0, noise_multiplier=0.0,
      expected_batch_size=8), loss=LOSS)
  step = tf.function(lambda x, y: model.train_step((x, y)), input_signature=[
      tf.TensorSpec([None, 5]), tf.TensorSpec([None], tf.int64)])
  before = [v.numpy() for v in model.trainable_variables]
  step(tf.zeros([0, 5]), tf.zeros([0], tf.int64))
  assert model.optimizer.iterations.numpy() == 1
  for b, v in zip(before, model.trainable_variables):
    np.testing.assert_array_equal(b, v.numpy())
  x, y = _data()
  step(x[:5], y[:5])  # A non-empty batch after it still trains.
  assert any(np.any(b != v.numpy())
             for b, v in zip(before, model.trainable_variables))


def test_weight_regularizer_is_added_after_clipping_unclipped():
  x, y = _data()
  model = _model(regularizer=tf.keras.regularizers.L2(0.5))
  data_loss = oracle.clipped_sum(
      oracle.per_example_gradients(model, x, y, LOSS), 0.2)
  kernel = model.layers[0].kernel.numpy()
  change = _one_noiseless_step(model, x, y, 0.2)
  expected = [e / len(x) for e in data_loss]
  expected[0] = expected[0] + 2 * 0.5 * kernel
  oracle.assert_gradients_close(change, expected, 1e-5)


@pytest.mark.parametrize("physical_batch_size", [None, 16])
def test_fit_with_validation_metrics_and_poisson_batches(physical_batch_size):
  x, y = _data(n=512)
  batches = tfdp.data.poisson_batches(x, y, 64, seed=0)
  model = tfdp.make_private(_model(), physical_batch_size=physical_batch_size)
  model.compile(optimizer=tfdp.optimizers.DPAdam(
      learning_rate=0.05, l2_norm_clip=1.0, noise_multiplier=0.5,
      expected_batch_size=64), loss=LOSS, metrics=["accuracy"])
  history = model.fit(batches.dataset, epochs=5,
                      validation_data=_data(n=256, seed=1), verbose=0)
  assert history.history["val_accuracy"][-1] > 0.75
  assert history.history["loss"][-1] < history.history["loss"][0]


def test_non_private_optimizer_is_refused():
  model = tfdp.make_private(_model())
  model.compile(optimizer="sgd", loss=LOSS)
  with pytest.raises(ValueError, match="DP optimizer"):
    model.fit(*_data(), verbose=0)


def test_batch_norm_is_refused_at_make_private():
  model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(5,)),
                               tf.keras.layers.BatchNormalization()])
  with pytest.raises(tfdp.clipping.UnsupportedLayerError,
                     match="BatchNormalization"):
    tfdp.make_private(model)


def test_activity_regularizer_is_refused():
  model = tf.keras.Sequential([tf.keras.layers.Dense(
      3, input_shape=(5,), activity_regularizer="l2")])
  with pytest.raises(ValueError, match="activity_regularizer"):
    tfdp.make_private(model)


@pytest.mark.parametrize("batch", [8, None])
def test_accumulation_starts_from_no_tensor_the_size_of_a_variable(batch):
  # Zeros of the variables' shapes as the loop's starting sums would be
  # folded by Grappler into constants held for the graph's whole life, as
  # much memory as the model's gradients.
  model = tfdp.make_private(_model(), physical_batch_size=3)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=1.0, l2_norm_clip=1.0, noise_multiplier=0.0,
      expected_batch_size=8), loss=LOSS)
  step = tf.function(lambda x, y: model.train_step((x, y)))
  graph = step.get_concrete_function(
      tf.TensorSpec([batch, 5]), tf.TensorSpec([batch], tf.int64)).graph
  (loop,) = [op for op in graph.get_operations()
             if op.type in ("While", "StatelessWhile")]
  starts = [t for t in loop.inputs
            if t.op.type in ("Const", "Fill", "ZerosLike")]
  assert starts, "the loop's starting sums were not found"
  assert all(t.shape.rank == 0 for t in starts), [
      (t.op.type, t.shape) for t in starts]


def test_bad_physical_batch_size_is_named():
  with pytest.raises(ValueError, match="physical_batch_size"):
    tfdp.make_private(_model(), physical_batch_size=0)


def test_mirrored_strategy_matches_one_device_and_adds_noise_once():
  result = subprocess.run(
      [sys.executable, str(ROOT / "tests" / "mirrored_check.py"), str(ROOT)],
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["replicas"] == 2
  assert report["strategy_relative_error"] < 1e-5
  assert report["single_relative_error"] < 1e-5
  assert report["strategy_vs_single_relative_error"] < 1e-5
  n, expected = report["noise_size"], report["expected_std"]
  # Noise drawn on each of the 2 replicas would give sqrt(2) * sigma * C.
  assert abs(report["noise_std"] - expected) < (
      noise_stats.Z * expected / np.sqrt(2 * n))
  assert abs(report["noise_mean"]) < noise_stats.Z * expected / np.sqrt(n)
  # The same through model.fit: the noise of one step, once across replicas.
  noise_stats.assert_noise_std(report["fit_weight_change"])
  # distributed_poisson_batches: the replicas' union is one Poisson sample.
  noise_stats.assert_poisson_union(report["sampled_rows"], size=200, batch=20)
  assert report["fit_with_sampler"]["steps"] == 6


def test_train_step_compiles_with_xla():
  x, y = _data()
  model = tfdp.make_private(_model())
  expected = oracle.clipped_sum(oracle.per_example_gradients(model, x, y, LOSS),
                                0.2)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=1.0, l2_norm_clip=0.2, noise_multiplier=0.0,
      expected_batch_size=len(x)), loss=LOSS, jit_compile=True)
  before = [v.numpy() for v in model.trainable_variables]
  model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
  change = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
  oracle.assert_gradients_close(change, [e / len(x) for e in expected], 1e-5)


def _public_batch_norm_model():
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([
      tf.keras.layers.Dense(6, activation="tanh", input_shape=(5,)),
      tfdp.layers.PublicBatchNormalization(momentum=0.5),
      tf.keras.layers.Dense(3),
  ])


def _public_statistics(model, public):
  activations = model.layers[0](public).numpy().astype(np.float64)
  return activations.mean(axis=0), activations.var(axis=0)


def test_public_data_step_is_exact_and_statistics_follow_the_weights():
  x, y = _data()
  public = _data(n=6, seed=2)[0]
  model = _public_batch_norm_model()
  norm = model.layers[1]
  mean0, variance0 = _public_statistics(model, public)
  # The oracle: private examples one at a time, normalised with the public
  # statistics of the current weights.
  tfdp.layers.update_public_statistics(model, public)
  expected = oracle.clipped_sum(oracle.per_example_gradients(model, x, y, LOSS),
                                0.2)
  change = _one_noiseless_step(model, x, y, 0.2, public_data=public)
  oracle.assert_gradients_close(change, [e / len(x) for e in expected], 1e-5)
  # The step's public pass ran before the update, with the old weights.
  np.testing.assert_allclose(norm.public_mean.numpy(), mean0, atol=1e-5)
  np.testing.assert_allclose(norm.public_variance.numpy(), variance0,
                             rtol=1e-5)
  # The next step's statistics come from the updated weights.
  mean1, variance1 = _public_statistics(model, public)
  assert not np.allclose(mean1, mean0, atol=1e-3)
  model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
  np.testing.assert_allclose(norm.public_mean.numpy(), mean1, atol=1e-5)
  np.testing.assert_allclose(norm.public_variance.numpy(), variance1,
                             rtol=1e-5)


def test_public_data_with_accumulation_and_noise_fits():
  x, y = _data(n=64)
  model = tfdp.make_private(_public_batch_norm_model(), physical_batch_size=8,
                            public_data=_data(n=16, seed=3)[0])
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=0.5,
      expected_batch_size=32), loss=LOSS)
  history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
  assert np.all(np.isfinite(history.history["loss"]))
  model.evaluate(x, y, verbose=0)


def test_public_data_errors_at_make_private():
  with pytest.raises(ValueError,
                     match="PublicBatchNormalization.*public_data="):
    tfdp.make_private(_public_batch_norm_model())
  with pytest.raises(ValueError, match="public_data must hold at least 2 "
                     "examples.*got 1"):
    tfdp.make_private(_public_batch_norm_model(), public_data=_data(n=1)[0])
  with pytest.raises(ValueError, match="public_data is used only by"):
    tfdp.make_private(_model(), public_data=_data()[0])
  model = _public_batch_norm_model()
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=0.5,
      expected_batch_size=8), loss=LOSS)
  with pytest.raises(ValueError, match="update_public_statistics"):
    model.fit(*_data(), verbose=0)  # Not through make_private: no statistics.


def _compiled_private(physical_batch_size=None):
  model = tfdp.make_private(_model(), physical_batch_size=physical_batch_size)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0,
      expected_batch_size=8), loss=LOSS)
  return model


def _assert_refused_and_unchanged(model, x, y, match):
  accountant = tfdp.privacy.PrivacyAccountant(1.0, 1e-5, batch_size=8,
                                              dataset_size=1000)
  accountant.track(model.optimizer)
  model.train_on_batch(x[:2], y[:2])  # Builds the optimizer.
  weights = model.get_weights()
  steps = accountant.steps
  with pytest.raises(tf.errors.InvalidArgumentError, match=match):
    model.train_on_batch(x, y)
  for a, b in zip(weights, model.get_weights()):
    np.testing.assert_array_equal(a, b)
  assert accountant.steps == steps == 1  # Nothing charged either.


@pytest.mark.parametrize("physical_batch_size", [None, 3])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_is_refused_naming_the_step(bad,
                                                        physical_batch_size):
  x, y = _data()
  x[5, 2] = bad
  _assert_refused_and_unchanged(_compiled_private(physical_batch_size), x, y,
                                "non-finite.*DP step.*2")


def test_exact_path_refuses_non_finite_gradients_too():
  x, y = _data()
  x[5, 2] = np.nan
  model = _model()
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0,
      expected_batch_size=8), loss=LOSS)
  _assert_refused_and_unchanged(model, x, y, "non-finite.*DP step.*2")


@pytest.mark.parametrize("label", [1.5, np.nan])
def test_fractional_float_labels_are_refused(label):
  x, y = _data()
  y = y.astype(np.float32)
  y[3] = label
  _assert_refused_and_unchanged(_compiled_private(), x, y, "whole numbers")


def test_whole_float_labels_train_as_their_integers():
  x, y = _data()
  as_float = _one_noiseless_step(_model(), x, y.astype(np.float32), 0.2)
  as_int = _one_noiseless_step(_model(), x, y, 0.2)
  for a, b in zip(as_float, as_int):
    np.testing.assert_array_equal(a, b)
