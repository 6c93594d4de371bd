"""PrivacyCallback: steps counted, epsilon logged, budget enforced."""

import os

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp import callbacks
from tfdp import optimizers
from tfdp import privacy

N, BATCH, SIGMA, DELTA = 256, 32, 1.0, 1e-5
STEPS_PER_EPOCH = N // BATCH


def _reference_epsilon(steps):
  """dp_accounting's own PLD epsilon for Poisson-sampled DP-SGD."""
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          BATCH / N, dp_accounting.GaussianDpEvent(SIGMA)), steps)
  accountant = dp_accounting.pld.PLDAccountant()
  return accountant.compose(event).get_epsilon(DELTA)


def _accountant():
  return privacy.PrivacyAccountant(SIGMA, DELTA, batch_size=BATCH,
                                   dataset_size=N)


def _model(optimizer=None):
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
  model.compile(
      optimizer=optimizer or optimizers.DPSGD(
          learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=SIGMA,
          expected_batch_size=BATCH),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, reduction="none"))
  return model


def _data():
  rng = np.random.default_rng(0)
  return (rng.normal(size=(N, 3)).astype(np.float32),
          rng.integers(0, 2, N))


def _fit(model, callback, epochs):
  x, y = _data()
  return model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0,
                   callbacks=[callback])


def test_epsilon_in_logs_equals_dp_accounting_for_steps_taken():
  accountant = _accountant()
  history = _fit(_model(), callbacks.PrivacyCallback(accountant), epochs=3)
  assert accountant.steps == 3 * STEPS_PER_EPOCH
  for epoch, epsilon in enumerate(history.history["epsilon"]):
    np.testing.assert_allclose(
        epsilon, _reference_epsilon((epoch + 1) * STEPS_PER_EPOCH), rtol=1e-6)
  assert history.history["dp_steps"] == [8.0, 16.0, 24.0]
  assert history.history["noise_multiplier"] == [SIGMA] * 3
  assert history.history["delta"] == [DELTA] * 3


def test_resumed_training_keeps_counting():
  accountant = _accountant()
  model = _model()
  _fit(model, callbacks.PrivacyCallback(accountant), epochs=1)
  history = _fit(model, callbacks.PrivacyCallback(accountant), epochs=1)
  assert accountant.steps == 2 * STEPS_PER_EPOCH
  np.testing.assert_allclose(history.history["epsilon"][-1],
                             _reference_epsilon(2 * STEPS_PER_EPOCH),
                             rtol=1e-6)


def test_tensorboard_scalars(tmp_path):
  accountant = _accountant()
  _fit(_model(), callbacks.PrivacyCallback(accountant, log_dir=str(tmp_path)),
       epochs=2)
  values = {}
  for path in tf.io.gfile.glob(str(tmp_path / "privacy" / "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        values.setdefault(value.tag, []).append(
            float(tf.make_ndarray(value.tensor)))
  np.testing.assert_allclose(
      values["privacy/epsilon"],
      [_reference_epsilon(s * STEPS_PER_EPOCH) for s in (1, 2)], rtol=1e-6)
  assert values["privacy/dp_steps"] == [8.0, 16.0]


def test_stops_and_saves_before_passing_the_target(tmp_path):
  # A target between the epsilon of 2 and 3 epochs: training must stop after
  # epoch 2 of 10, with a checkpoint that restores the step count.
  target = (_reference_epsilon(2 * STEPS_PER_EPOCH) +
            _reference_epsilon(3 * STEPS_PER_EPOCH)) / 2
  accountant = _accountant()
  path = str(tmp_path / "ckpt" / "dp")
  model = _model()
  history = _fit(model, callbacks.PrivacyCallback(
      accountant, target_epsilon=target, checkpoint_path=path), epochs=10)
  assert len(history.history["epsilon"]) == 2
  assert history.history["epsilon"][-1] <= target
  restored = _accountant()
  tf.train.Checkpoint(accountant=restored).read(path).expect_partial()
  assert restored.steps == 2 * STEPS_PER_EPOCH
  fresh = _model()
  tf.train.Checkpoint(model=fresh).read(path).expect_partial()
  for a, b in zip(fresh.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_spent_budget_is_refused_and_nothing_is_overwritten(tmp_path):
  accountant = _accountant()
  accountant.record_steps(5 * STEPS_PER_EPOCH)
  path = str(tmp_path / "dp")
  tf.train.Checkpoint(accountant=accountant).write(path)
  before = {f: open(os.path.join(tmp_path, f), "rb").read()
            for f in os.listdir(tmp_path)}
  target = _reference_epsilon(5 * STEPS_PER_EPOCH)  # one more epoch passes it
  with pytest.raises(callbacks.PrivacyBudgetExceededError,
                     match="target_epsilon"):
    _fit(_model(), callbacks.PrivacyCallback(
        accountant, target_epsilon=target, checkpoint_path=path), epochs=1)
  after = {f: open(os.path.join(tmp_path, f), "rb").read()
           for f in os.listdir(tmp_path)}
  assert after == before
  assert accountant.steps == 5 * STEPS_PER_EPOCH


def test_non_private_optimizer_is_refused():
  model = _model(optimizer=tf.keras.optimizers.SGD())
  with pytest.raises(ValueError, match="non-private"):
    _fit(model, callbacks.PrivacyCallback(_accountant()), epochs=1)


def test_accountant_must_match_the_optimizer():
  accountant = privacy.PrivacyAccountant(2 * SIGMA, DELTA, batch_size=BATCH,
                                         dataset_size=N)
  with pytest.raises(ValueError, match="noise_multiplier"):
    _fit(_model(), callbacks.PrivacyCallback(accountant), epochs=1)


def test_bad_target_is_named():
  with pytest.raises(ValueError, match="target_epsilon"):
    callbacks.PrivacyCallback(_accountant(), target_epsilon=-1.0)


def _private_model():
  model = _model()
  return tfdp.make_private(model)


@pytest.mark.parametrize("make_x, match", [
    (lambda x, y, s: (x, y), "shuffles the data once per epoch"),
    (lambda x, y, s: (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(N)
                      .batch(BATCH), None), "batches its elements"),
    (lambda x, y, s: (tfdp.data.fixed_size_batches(x, y, BATCH).dataset,
                      None), "fixed_size sampling"),
    (lambda x, y, s: (tfdp.data.poisson_batches(x, y, 2 * BATCH).dataset,
                      None), "poisson sampling of 64"),
])
def test_data_the_accountant_does_not_describe_is_refused(make_x, match):
  x, y = _data()
  model = _private_model()
  weights = model.get_weights()
  fit_x, fit_y = make_x(x, y, None)
  with pytest.raises(ValueError, match=match):
    model.fit(fit_x, fit_y, batch_size=BATCH if fit_y is not None else None,
              epochs=1, verbose=0,
              callbacks=[callbacks.PrivacyCallback(_accountant())])
  assert model.optimizer.iterations.numpy() == 0
  for a, b in zip(weights, model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_the_accountants_sampler_is_accepted_repeated_or_not(caplog):
  x, y = _data()
  sampled = tfdp.data.poisson_batches(x, y, BATCH)
  accountant = privacy.PrivacyAccountant(SIGMA, DELTA,
                                         **sampled.accountant_kwargs())
  model = _private_model()
  model.fit(sampled.dataset, epochs=1, verbose=0,
            callbacks=[callbacks.PrivacyCallback(accountant)])
  model.fit(sampled.dataset.repeat(), steps_per_epoch=3, epochs=1, verbose=0,
            callbacks=[callbacks.PrivacyCallback(accountant)])
  assert accountant.steps == STEPS_PER_EPOCH + 3
  # An accountant given q alone matches the sampler with that q.
  by_q = privacy.PrivacyAccountant(SIGMA, DELTA,
                                   sampling_probability=BATCH / N)
  model.fit(sampled.dataset, epochs=1, verbose=0,
            callbacks=[callbacks.PrivacyCallback(by_q)])
  # A pipeline tfdp cannot see into (no batching of its own) is let through
  # with a warning.
  unknown = sampled.dataset.map(lambda xb, yb: (xb, yb))
  with caplog.at_level("WARNING"):
    model.fit(unknown, epochs=1, verbose=0,
              callbacks=[callbacks.PrivacyCallback(accountant)])
  assert "no tfdp sampler made" in caplog.text


def test_metrics_are_reset_at_the_end_of_training():
  model = _model()
  model.compile(optimizer=model.optimizer, loss=model.loss,
                metrics=["accuracy"])
  _fit(model, callbacks.PrivacyCallback(_accountant()), epochs=1)
  assert all(float(v.numpy()) == 0.0 for m in model.metrics
             for v in m.variables)


def test_accountant_batch_size_must_match_the_optimizer():
  accountant = privacy.PrivacyAccountant(SIGMA, DELTA, batch_size=2 * BATCH,
                                         dataset_size=N)
  model = _model()
  with pytest.raises(ValueError, match="expected_batch_size"):
    _fit(model, callbacks.PrivacyCallback(accountant), epochs=1)
  assert model.optimizer.iterations.numpy() == 0
