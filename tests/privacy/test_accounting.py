"""Tests for tfdp.privacy.accounting against dp_accounting and exact bounds."""

import math

import dp_accounting
import pytest
from scipy import optimize
from scipy import stats

from tfdp.privacy import accounting
from tfdp.privacy.accounting import FIXED_SIZE, PLD, POISSON, RDP

_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
_REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE


def _dp_accounting_poisson(accountant, q, sigma, steps, delta):
  """Epsilon of Poisson DP-SGD, from dp_accounting called directly."""
  if accountant == PLD:
    dp_accountant = dp_accounting.pld.PLDAccountant(_ADD_REMOVE)
  else:
    dp_accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=_ADD_REMOVE)
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), steps)
  return dp_accountant.compose(event).get_epsilon(delta)


def _dp_accounting_fixed_size(dataset_size, batch_size, sigma, steps, delta):
  """Epsilon of fixed-size DP-SGD, from dp_accounting's RDP (replace-one).

  Replacing one example moves the clipped sum by up to 2C and the noise is
  N(0, (sigma C)^2): the Gaussian's noise over sensitivity is sigma / 2.
  """
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.SampledWithoutReplacementDpEvent(
          dataset_size, batch_size, dp_accounting.GaussianDpEvent(sigma / 2)),
      steps)
  dp_accountant = dp_accounting.rdp.RdpAccountant(
      neighboring_relation=_REPLACE_ONE)
  return dp_accountant.compose(event).get_epsilon(delta)


def _exact_gaussian_delta(epsilon, mu):
  """delta(epsilon) of the Gaussian mechanism with sensitivity / stddev = mu.

  Balle & Wang (2018), Theorem 8:
  delta = Phi(mu / 2 - epsilon / mu) - e^epsilon Phi(-mu / 2 - epsilon / mu).
  """
  return (stats.norm.cdf(mu / 2 - epsilon / mu) -
          math.exp(epsilon) * stats.norm.cdf(-mu / 2 - epsilon / mu))


def _exact_gaussian_epsilon(delta, mu):
  return optimize.brentq(lambda e: _exact_gaussian_delta(e, mu) - delta, 0,
                         100, xtol=1e-12)


@pytest.mark.parametrize("accountant, q, sigma, steps, delta", [
    (PLD, 0.01, 2.0, 1000, 1e-5),
    (PLD, 0.05, 2.0, 200, 1e-6),
    (PLD, 0.2, 4.0, 50, 1e-3),
    (RDP, 0.01, 1.1, 1000, 1e-5),
    (RDP, 0.05, 0.8, 300, 1e-6),
    (RDP, 0.004, 1.5, 2000, 1e-5),
])
def test_poisson_epsilon_matches_dp_accounting(accountant, q, sigma, steps,
                                               delta):
  spent = accounting.compute_epsilon(
      sigma, steps, delta, sampling_probability=q, accountant=accountant)
  expected = _dp_accounting_poisson(accountant, q, sigma, steps, delta)
  assert spent.epsilon == pytest.approx(expected, rel=1e-6, abs=1e-6)
  assert (spent.accountant, spent.sampling, spent.steps) == (
      accountant, POISSON, steps)
  assert (spent.noise_multiplier, spent.sampling_probability,
          spent.delta) == (sigma, q, delta)


@pytest.mark.parametrize("dataset_size, batch_size, sigma, steps, delta, "
                         "accountant", [
                             (60000, 256, 1.1, 1000, 1e-5, RDP),
                             (1000, 50, 3.0, 100, 1e-6, PLD),
                         ])
def test_fixed_size_epsilon_matches_dp_accounting_rdp(dataset_size, batch_size,
                                                      sigma, steps, delta,
                                                      accountant):
  spent = accounting.compute_epsilon(
      sigma, steps, delta, sampling=FIXED_SIZE, batch_size=batch_size,
      dataset_size=dataset_size, accountant=accountant)
  expected = _dp_accounting_fixed_size(dataset_size, batch_size, sigma, steps,
                                       delta)
  assert spent.epsilon == pytest.approx(expected, rel=1e-6, abs=1e-6)
  assert spent.accountant == RDP
  assert spent.sampling == FIXED_SIZE
  assert spent.sampling_probability == batch_size / dataset_size


@pytest.mark.parametrize("sigma, steps", [(4.0, 10), (10.0, 100)])
def test_full_batch_fixed_size_is_sound_for_replace_one(sigma, steps):
  # batch == dataset: each step is the Gaussian mechanism on a sum whose
  # replace-one sensitivity is 2C, noise sigma C; `steps` of them compose to
  # one with mu = 2 sqrt(steps) / sigma, whose exact delta(epsilon) is known.
  delta = 1e-5
  spent = accounting.compute_epsilon(
      sigma, steps, delta, sampling=FIXED_SIZE, batch_size=100,
      dataset_size=100)
  mu = 2 * math.sqrt(steps) / sigma
  assert _exact_gaussian_delta(spent.epsilon, mu) <= delta
  assert spent.epsilon < 1.5 * _exact_gaussian_epsilon(delta, mu)


@pytest.mark.parametrize("accountant", [PLD, RDP])
def test_full_batch_poisson_is_sound_and_pld_is_tight(accountant):
  # q = 1: `steps` Gaussian mechanisms of sensitivity C compose to one with
  # mu = sqrt(steps) / sigma.
  sigma, steps, delta = 5.0, 25, 1e-5
  spent = accounting.compute_epsilon(
      sigma, steps, delta, sampling_probability=1.0, accountant=accountant)
  exact = _exact_gaussian_epsilon(delta, math.sqrt(steps) / sigma)
  assert spent.epsilon >= exact - 1e-9
  if accountant == PLD:
    assert spent.epsilon == pytest.approx(exact, rel=1e-2)


@pytest.mark.parametrize("accountant", [PLD, RDP])
def test_sizes_and_probability_give_the_same_poisson_epsilon(accountant):
  by_sizes = accounting.compute_epsilon(
      3.0, 300, 1e-5, batch_size=250, dataset_size=10000,
      accountant=accountant)
  by_probability = accounting.compute_epsilon(
      3.0, 300, 1e-5, sampling_probability=0.025, accountant=accountant)
  assert by_sizes.epsilon == pytest.approx(by_probability.epsilon, rel=1e-9)
  assert by_sizes.sampling_probability == 0.025


def test_dpsgd_event():
  assert accounting.dpsgd_event(
      1.5, 7, batch_size=10, dataset_size=1000) == (
          dp_accounting.SelfComposedDpEvent(
              dp_accounting.PoissonSampledDpEvent(
                  0.01, dp_accounting.GaussianDpEvent(1.5)), 7))
  assert accounting.dpsgd_event(
      1.5, 7, sampling=FIXED_SIZE, batch_size=10, dataset_size=1000) == (
          dp_accounting.SelfComposedDpEvent(
              dp_accounting.SampledWithoutReplacementDpEvent(
                  1000, 10, dp_accounting.GaussianDpEvent(0.75)), 7))


_POISSON_SETUP = dict(sampling_probability=0.02)
_FIXED_SETUP = dict(sampling=FIXED_SIZE, batch_size=10, dataset_size=1000)


@pytest.mark.parametrize("target, accountant, setup", [
    (0.5, PLD, _POISSON_SETUP),
    (1.0, PLD, _POISSON_SETUP),
    (0.5, RDP, _POISSON_SETUP),
    (1.0, RDP, _POISSON_SETUP),
    (3.0, RDP, _POISSON_SETUP),
    (8.0, RDP, _POISSON_SETUP),
    (1.0, PLD, _FIXED_SETUP),  # Accounted with RDP, the only one that can.
    (8.0, RDP, _FIXED_SETUP),
])
def test_calibrated_noise_spends_just_under_the_target(target, accountant,
                                                       setup):
  # PLD targets keep sigma >= 1: the PLDs of smaller sigmas are slow.
  steps, delta = 300, 1e-5
  sigma = accounting.calibrate_noise_multiplier(
      target, delta, steps, accountant=accountant, **setup)
  if setup is _FIXED_SETUP:
    epsilon = _dp_accounting_fixed_size(1000, 10, sigma, steps, delta)
  else:
    epsilon = _dp_accounting_poisson(accountant, 0.02, sigma, steps, delta)
  assert 0.99 * target <= epsilon <= target


def test_calibration_with_zero_steps_needs_no_noise():
  assert accounting.calibrate_noise_multiplier(
      1.0, 1e-5, 0, sampling_probability=0.1) == 0.0


@pytest.mark.parametrize("accountant", [PLD, RDP])
def test_epsilon_grows_with_steps_and_shrinks_with_noise(accountant):

  def epsilon(sigma, steps):
    return accounting.compute_epsilon(
        sigma, steps, 1e-5, sampling_probability=0.02,
        accountant=accountant).epsilon

  assert 0 < epsilon(3.0, 10) < epsilon(3.0, 100) < epsilon(3.0, 1000)
  assert epsilon(3.0, 100) > epsilon(4.0, 100) > epsilon(8.0, 100) > 0


@pytest.mark.parametrize("setup", [_POISSON_SETUP, _FIXED_SETUP])
@pytest.mark.parametrize("accountant", [PLD, RDP])
def test_no_noise_is_no_privacy_and_no_step_costs_nothing(setup, accountant):
  no_noise = accounting.compute_epsilon(
      0.0, 10, 1e-5, accountant=accountant, **setup)
  no_step = accounting.compute_epsilon(
      1.0, 0, 1e-5, accountant=accountant, **setup)
  assert no_noise.epsilon == math.inf
  assert no_step.epsilon == 0.0


def test_privacy_spent_str():
  spent = accounting.PrivacySpent(
      epsilon=2.9812, delta=1e-5, accountant=PLD, sampling=POISSON,
      noise_multiplier=1.72, steps=660, sampling_probability=0.0445)
  assert str(spent) == (
      "epsilon=2.98 at delta=1e-05 after 660 steps (PLD accountant, Poisson "
      "sampling q=0.0445, noise multiplier 1.72)")


_VALID = dict(noise_multiplier=1.0, steps=10, delta=1e-5,
              sampling_probability=0.1)


@pytest.mark.parametrize("changes, match", [
    (dict(noise_multiplier=-1.0), "noise_multiplier must be .* >= 0"),
    (dict(noise_multiplier=math.nan), "noise_multiplier"),
    (dict(steps=-1), "steps must be an integer >= 0"),
    (dict(steps=2.5), "steps must be an integer"),
    (dict(delta=0.0), r"delta must be in the open interval \(0, 1\)"),
    (dict(delta=1.0), "delta"),
    (dict(sampling="shuffle"), "sampling must be one of"),
    (dict(accountant="moments"), "accountant must be one of 'pld', 'rdp'"),
    (dict(sampling_probability=0.0), r"sampling_probability must be in \(0, "),
    (dict(sampling_probability=1.5), "sampling_probability"),
    (dict(sampling_probability=None), "sampling_probability, or both "
     "batch_size and dataset_size"),
    (dict(batch_size=10, dataset_size=100), "either sampling_probability or "
     r"\(batch_size, dataset_size\), not both"),
    (dict(sampling_probability=None, batch_size=10), "dataset_size=None"),
    (dict(sampling_probability=None, batch_size=10, dataset_size=0),
     "dataset_size must be .* the dataset is empty"),
    (dict(sampling_probability=None, batch_size=0, dataset_size=100),
     "batch_size must be an integer >= 1"),
    (dict(sampling_probability=None, batch_size=200, dataset_size=100),
     r"batch_size \(200\) is larger than the dataset \(100 examples\)"),
    (dict(sampling=FIXED_SIZE), "needs batch_size and dataset_size"),
])
def test_compute_epsilon_rejects_bad_arguments(changes, match):
  kwargs = {**_VALID, **changes}
  with pytest.raises(ValueError, match=match):
    accounting.compute_epsilon(**kwargs)


@pytest.mark.parametrize("function", [
    lambda **kw: accounting.dpsgd_event(1.0, 10, **kw),
    lambda **kw: accounting.calibrate_noise_multiplier(1.0, 1e-5, 10, **kw),
])
@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=200, dataset_size=100), r"batch_size \(200\) is larger"),
    (dict(batch_size=1, dataset_size=0), "the dataset is empty"),
    (dict(sampling=FIXED_SIZE, sampling_probability=0.1), "batch_size and "
     "dataset_size"),
])
def test_other_entry_points_share_the_checks(function, kwargs, match):
  with pytest.raises(ValueError, match=match):
    function(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_epsilon=0.0), "target_epsilon must be a finite number > 0"),
    (dict(tolerance=1.0), "tolerance"),
    (dict(max_noise_multiplier=0.0), "max_noise_multiplier"),
    (dict(steps=-3), "steps"),
    (dict(target_epsilon=0.01, steps=10000, max_noise_multiplier=1.0),
     "target_epsilon=0.01 cannot be reached.*fewer steps.*smaller batch.*"
     "larger delta"),
])
def test_calibration_rejects_bad_arguments(kwargs, match):
  kwargs = {**dict(target_epsilon=1.0, delta=1e-5, steps=10,
                   sampling_probability=0.5, accountant=RDP), **kwargs}
  with pytest.raises(ValueError, match=match):
    accounting.calibrate_noise_multiplier(**kwargs)
