"""Tests for tfdp.privacy.PrivacyAccountant."""

import json

import pytest
import tensorflow as tf

from tfdp.privacy import accounting
from tfdp.privacy.accountant import PrivacyAccountant
from tfdp.privacy.accounting import FIXED_SIZE, PLD, POISSON, RDP

_SIGMA, _DELTA = 2.0, 1e-5
_SIZES = dict(batch_size=50, dataset_size=2000)


def _accountant(**kwargs):
  return PrivacyAccountant(_SIGMA, _DELTA, **{**_SIZES, **kwargs})


@pytest.mark.parametrize("kwargs", [
    dict(accountant=PLD),
    dict(accountant=RDP),
    dict(sampling=FIXED_SIZE),
])
def test_spent_is_compute_epsilon_at_the_recorded_steps(kwargs):
  accountant = _accountant(**kwargs)
  assert accountant.steps == 0
  assert accountant.spent().epsilon == 0.0
  accountant.record_steps()
  accountant.record_steps(0)
  accountant.record_steps(39)
  assert accountant.steps == 40
  assert accountant.spent() == accounting.compute_epsilon(
      _SIGMA, 40, _DELTA, **_SIZES, **kwargs)


def test_spent_after_looks_ahead_without_recording():
  accountant = _accountant()
  accountant.record_steps(10)
  ahead = accountant.spent_after(30)
  assert accountant.steps == 10
  assert ahead == accounting.compute_epsilon(_SIGMA, 40, _DELTA, **_SIZES)
  assert ahead.epsilon > accountant.spent().epsilon
  assert accountant.spent_after(0) == accountant.spent()


def test_checkpoint_restores_steps_into_a_fresh_accountant(tmp_path):
  accountant = _accountant()
  accountant.record_steps(37)
  path = tf.train.Checkpoint(accountant=accountant).write(
      str(tmp_path / "accountant"))
  fresh = PrivacyAccountant(**accountant.get_config())
  assert fresh.steps == 0
  tf.train.Checkpoint(accountant=fresh).read(path).assert_consumed()
  assert fresh.steps == 37
  assert fresh.spent() == accountant.spent()


def test_counters_are_non_trainable_first_replica_variables():
  accountant = _accountant()
  assert len(accountant.variables) == 3  # Steps, lineage, iterations counted.
  assert not accountant.trainable_variables
  for variable in accountant.variables:
    assert variable.dtype == tf.int64
    assert variable.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA


@pytest.mark.parametrize("kwargs", [
    dict(sampling_probability=0.01),
    dict(**_SIZES, sampling=FIXED_SIZE, accountant=PLD, name="fixed"),
])
def test_get_config_round_trips(kwargs):
  accountant = PrivacyAccountant(_SIGMA, _DELTA, **kwargs)
  config = accountant.get_config()
  assert json.loads(json.dumps(config)) == config
  assert PrivacyAccountant(**config).get_config() == config
  assert config["noise_multiplier"] == _SIGMA and config["delta"] == _DELTA


def test_properties():
  poisson = _accountant()
  assert (poisson.noise_multiplier, poisson.delta, poisson.sampling,
          poisson.sampling_probability, poisson.accountant) == (
              _SIGMA, _DELTA, POISSON, 0.025, PLD)
  fixed = _accountant(sampling=FIXED_SIZE, accountant=PLD)
  assert fixed.accountant == RDP
  assert fixed.get_config()["accountant"] == PLD


@pytest.mark.parametrize("call, match", [
    (lambda: PrivacyAccountant(-1.0, _DELTA, **_SIZES), "noise_multiplier"),
    (lambda: PrivacyAccountant(_SIGMA, 1.5, **_SIZES), "delta"),
    (lambda: PrivacyAccountant(_SIGMA, _DELTA, batch_size=5, dataset_size=0),
     "dataset_size.*the dataset is empty"),
    (lambda: PrivacyAccountant(_SIGMA, _DELTA, batch_size=50, dataset_size=10),
     r"batch_size \(50\) is larger than the dataset \(10 examples\)"),
    (lambda: PrivacyAccountant(_SIGMA, _DELTA, sampling=FIXED_SIZE,
                               sampling_probability=0.1),
     "batch_size and dataset_size"),
    (lambda: PrivacyAccountant(_SIGMA, _DELTA, accountant="gdp", **_SIZES),
     "accountant must be one of"),
    (lambda: _accountant().record_steps(-1), "num_steps must be an integer"),
    (lambda: _accountant().record_steps(1.0), "num_steps"),
    (lambda: _accountant().spent_after(-5), "additional_steps"),
])
def test_bad_arguments_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def _optimizer(**kwargs):
  # Imported here: tfdp.privacy must not need the optimizers at import.
  from tfdp import optimizers  # pylint: disable=g-import-not-at-top
  return optimizers.DPSGD(**{"learning_rate": 0.1, "l2_norm_clip": 1.0,
                             "noise_multiplier": _SIGMA,
                             "expected_batch_size": 50, **kwargs})


def _take_steps(optimizer, steps):
  optimizer.iterations.assign_add(steps)  # What apply_gradients counts.


def test_tracked_optimizer_steps_count_without_any_callback():
  optimizer, accountant = _optimizer(), _accountant()
  accountant.track(optimizer)
  _take_steps(optimizer, 7)
  assert accountant.steps == 7
  assert accountant.spent() == accounting.compute_epsilon(
      _SIGMA, 7, _DELTA, **_SIZES)
  accountant.track(optimizer)  # Idempotent.
  accountant.record_steps(3)  # By-hand steps add up with tracked ones.
  _take_steps(optimizer, 2)
  assert accountant.steps == 12


def test_new_accountant_counts_the_steps_an_optimizer_already_took():
  optimizer = _optimizer()
  _take_steps(optimizer, 40)
  accountant = _accountant()
  accountant.track(optimizer)
  assert accountant.steps == 40


@pytest.mark.parametrize("track_before_restore", [True, False])
@pytest.mark.parametrize("saved_with_accountant", [True, False])
def test_restored_optimizer_counts_its_lineage_once(
    tmp_path, track_before_restore, saved_with_accountant):
  """10 steps saved, then restored into a new optimizer and accountant.

  As in a new process; the accountant rides along in the checkpoint when it
  tracked the optimizer, and tracking may start before or after the restore
  (the callback order around BackupAndRestore).
  """
  optimizer = _optimizer()
  if saved_with_accountant:
    _accountant().track(optimizer)
  _take_steps(optimizer, 10)
  path = tf.train.Checkpoint(optimizer=optimizer).write(str(tmp_path / "c"))
  restored_optimizer, restored = _optimizer(), _accountant()
  if track_before_restore:
    restored.track(restored_optimizer)
  tf.train.Checkpoint(optimizer=restored_optimizer).read(path)
  restored.track(restored_optimizer)
  assert restored_optimizer.iterations.numpy() == 10
  assert restored.steps == 10
  _take_steps(restored_optimizer, 5)
  assert restored.steps == 15


def test_steps_of_successive_optimizers_add_up_and_never_go_down(tmp_path):
  first, accountant = _optimizer(), _accountant()
  accountant.track(first)
  _take_steps(first, 30)
  older = tf.train.Checkpoint(optimizer=first).write(str(tmp_path / "old"))
  _take_steps(first, 20)
  assert accountant.steps == 50
  # The optimizer goes back to an older checkpoint: the 20 steps taken since
  # stay counted.
  tf.train.Checkpoint(optimizer=first).read(older)
  assert first.iterations.numpy() == 30
  assert accountant.steps == 50
  _take_steps(first, 1)
  assert accountant.steps == 51
  # Another optimizer that already took steps of its own (another lineage):
  # all of them count, on top.
  second = _optimizer()
  _take_steps(second, 100)
  accountant.track(second)
  assert accountant.steps == 151


@pytest.mark.parametrize("kwargs, match", [
    (dict(noise_multiplier=1.0), "noise_multiplier"),
    (dict(expected_batch_size=64), "expected_batch_size"),
])
def test_track_refuses_an_optimizer_that_does_not_match(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _accountant().track(_optimizer(**kwargs))


def test_track_refuses_a_non_private_optimizer():
  with pytest.raises(ValueError, match="non-private"):
    _accountant().track(tf.keras.optimizers.SGD(0.1))


def test_delta_not_below_one_over_n_warns(caplog):
  with caplog.at_level("WARNING"):
    PrivacyAccountant(_SIGMA, 1e-3, batch_size=10, dataset_size=1000)
  assert "1/N" in caplog.text
