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


def test_step_count_is_one_non_trainable_first_replica_variable():
  accountant = _accountant()
  (steps,) = accountant.variables
  assert not accountant.trainable_variables
  assert steps.dtype == tf.int64
  assert steps.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA


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
