"""The PLD guard of tfdp.privacy.accounting: bounded cost, valid upper bounds.

dp_accounting's PLD accountant with its defaults asks for 38 GiB at noise
multiplier 1e-3, runs minutes and gigabytes at 0.05, and tens of gigabytes at
1e9 steps. Guarded, each case takes seconds and well under 2 GB (measured in
a fresh process), and its epsilon is checked against independent references:
dp_accounting's RDP accountant (an upper bound: the guard never reports
more, and exactly it when it falls back to it), dp_accounting's PLD with its
defaults where that is computable, and the exact composition of Gaussian
mechanisms at q = 1 (a lower bound that the guard must not undercut).
"""

import json
import logging as pylogging
import math
import pathlib

import dp_accounting
from dp_accounting.pld import privacy_loss_mechanism
import pytest
from scipy import optimize
from scipy import stats

from tests import scripts
from tfdp.privacy import accounting
from tfdp.privacy.accounting import PLD, RDP

# Digits with batch 64: q = 64 / 1437; 20 epochs of 22 steps = 440 steps.
Q = 64 / 1437
STEPS = 440
DELTA = 1e-5
# (noise multiplier, q, steps): what the unguarded accountant could not do.
CASES = [
    (1e-3, Q, STEPS),  # MemoryError: 38 GiB.
    (0.05, Q, STEPS),  # > 150 s and > 5 GB.
    (1.0, Q, 10**9),  # MemoryError: 35 GiB (grew past 22 GB uncapped).
    (1e-3, 1.0, STEPS),
    (0.05, 0.01, STEPS),
]
MAX_SECONDS = 30
MAX_GB = 2.0

# Filled in with the cases and delta; run with the repository root.
_CHECK_SCRIPT = '''
"""Runs compute_epsilon on each case, in this fresh process; one JSON line."""
import json
import resource
import sys
import time

# A regression fails here with MemoryError instead of taking the machine.
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
sys.path.insert(0, sys.argv[1])
from tfdp.privacy import accounting  # pylint: disable=g-import-not-at-top


def peak_gb():
  # This process image's own peak: ru_maxrss would also count the parent's
  # resident memory at the fork (a pytest worker's, after other tests).
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


results = [{"import_gb": peak_gb()}]
for sigma, q, steps in json.loads(__CASES__):
  start = time.perf_counter()
  try:
    spent = accounting.compute_epsilon(
        sigma, steps, __DELTA__, sampling_probability=q)
    result = {"epsilon": spent.epsilon, "accountant": spent.accountant}
  except (ValueError, MemoryError) as error:
    result = {"error": f"{type(error).__name__}: {error}"}
  # The peak only grows: an upper bound on this case's own peak.
  result.update(seconds=time.perf_counter() - start, peak_gb=peak_gb())
  results.append(result)
print(json.dumps(results))
'''


def _rdp_epsilon(sigma, q, steps, delta=DELTA):
  dp_accountant = dp_accounting.rdp.RdpAccountant()
  dp_accountant.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), steps))
  return dp_accountant.get_epsilon(delta)


def _default_pld_epsilon(sigma, q, steps, delta=DELTA):
  dp_accountant = dp_accounting.pld.PLDAccountant()
  dp_accountant.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), steps))
  return dp_accountant.get_epsilon(delta)


def _exact_gaussian_epsilon(sigma, steps, delta=DELTA):
  """Exact epsilon of `steps` Gaussian mechanisms (q = 1) of noise sigma.

  They compose to one with mu = sqrt(steps) / sigma, whose delta(epsilon) is
  Phi(mu / 2 - epsilon / mu) - e^epsilon Phi(-mu / 2 - epsilon / mu)
  (Balle & Wang 2018, Theorem 8), taken in log space for large epsilon.
  """
  mu = math.sqrt(steps) / sigma

  def excess(epsilon):
    first = stats.norm.cdf(mu / 2 - epsilon / mu)
    second = math.exp(epsilon + stats.norm.logcdf(-mu / 2 - epsilon / mu))
    return first - second - delta

  return optimize.brentq(excess, 0, mu * mu + 100 * mu, xtol=1e-9, rtol=1e-12)


@pytest.fixture(scope="module")
def fresh_process_results(tmp_path_factory):
  script = tmp_path_factory.mktemp("guard") / "guard_check.py"
  script.write_text(
      _CHECK_SCRIPT.replace("__CASES__", repr(json.dumps(CASES)))
      .replace("__DELTA__", repr(DELTA)))
  results = scripts.run_json_script(pathlib.Path(script), timeout=300)
  assert results[0]["import_gb"] < MAX_GB
  return dict(zip(CASES, results[1:]))


@pytest.mark.parametrize("case", CASES)
def test_unguarded_failures_now_finish_in_bounded_time_and_memory(
    fresh_process_results, case):
  result = fresh_process_results[case]
  assert "error" not in result, result
  assert result["seconds"] < MAX_SECONDS, result
  assert result["peak_gb"] < MAX_GB, result
  sigma, q, steps = case
  # Never above dp_accounting's RDP bound, and exactly it when it is used.
  rdp = _rdp_epsilon(sigma, q, steps)
  assert result["accountant"] in (PLD, RDP)
  if result["accountant"] == RDP:
    assert result["epsilon"] == rdp
  else:
    assert 0 < result["epsilon"] <= rdp


@pytest.mark.parametrize("sigma, steps", [(1e-3, STEPS), (0.05, STEPS),
                                          (0.2, 3000), (1.0, 10**6)])
def test_full_batch_guarded_epsilon_bounds_the_exact_one_tightly(sigma, steps):
  # Outside the default range; at q = 1 the exact epsilon is known.
  spent = accounting.compute_epsilon(sigma, steps, DELTA,
                                     sampling_probability=1.0)
  exact = _exact_gaussian_epsilon(sigma, steps)
  assert exact <= spent.epsilon <= 1.01 * exact + 1e-3
  assert spent.epsilon <= _rdp_epsilon(sigma, 1.0, steps)


def _single_step_epsilon(sigma, q, delta=DELTA):
  """Exact epsilon of one Poisson-subsampled Gaussian step: a lower bound.

  More steps release more (their first step among them), so epsilon after T
  steps is at least this. dp_accounting's mechanism classes give the exact
  delta(epsilon) of one step for either adjacency.
  """
  losses = [privacy_loss_mechanism.GaussianPrivacyLoss(
      sigma, sampling_prob=q, adjacency_type=adjacency)
            for adjacency in privacy_loss_mechanism.AdjacencyType]
  return optimize.brentq(
      lambda e: max(loss.get_delta_for_epsilon(e) for loss in losses) - delta,
      0, 1 / sigma**2 + 50 / sigma, xtol=1e-9)


def test_small_sigma_where_connect_the_dots_fails_stays_a_pld_bound():
  # dp_accounting's connect-the-dots PMF for this step trips on rounding
  # noise ("deltas are not in non-increasing order") at the coarse interval;
  # the guard builds it by privacy buckets instead of falling to a 9x looser
  # RDP.
  sigma, steps = 0.0625, 50
  spent = accounting.compute_epsilon(sigma, steps, DELTA,
                                     sampling_probability=Q)
  assert spent.accountant == PLD
  assert _single_step_epsilon(sigma, Q) <= spent.epsilon
  assert spent.epsilon <= _rdp_epsilon(sigma, Q, steps) / 3


def test_coarsened_pld_bounds_the_default_pld(monkeypatch, caplog):
  # Shrink the caps so that a case dp_accounting's defaults do in seconds is
  # coarsened: the coarse PLD must stay above it (an upper bound) and close.
  sigma, steps = 1.0, 1000
  default = _default_pld_epsilon(sigma, Q, steps)
  monkeypatch.setattr(accounting, "_MAX_DEFAULT_STEP_POINTS", 2**12)
  monkeypatch.setattr(accounting, "_MAX_COARSE_STEP_POINTS", 2**12)
  monkeypatch.setattr(accounting, "_MAX_COARSE_COMPOSED_POINTS", 2**16)
  monkeypatch.setattr(accounting, "_WARNED", set())
  accounting._epsilon.cache_clear()  # pylint: disable=protected-access
  try:
    with caplog.at_level(pylogging.WARNING):
      spent = accounting.compute_epsilon(sigma, steps, DELTA,
                                         sampling_probability=Q)
      again = accounting.compute_epsilon(sigma, steps + 1, DELTA,
                                         sampling_probability=Q)
  finally:
    accounting._epsilon.cache_clear()  # pylint: disable=protected-access
  assert spent.accountant == PLD
  assert default <= spent.epsilon <= 1.02 * default
  assert again.epsilon >= spent.epsilon
  warnings = [r.getMessage() for r in caplog.records
              if "PLD accounting" in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert "noise_multiplier >= 0.5" in warnings[0]
  assert "coarser grid" in warnings[0]


def test_rdp_fallback_is_dp_accountings_rdp_and_warns_once(monkeypatch,
                                                          caplog):
  monkeypatch.setattr(accounting, "_WARNED", set())
  accounting._epsilon.cache_clear()  # pylint: disable=protected-access
  with caplog.at_level(pylogging.WARNING):
    spent = [accounting.compute_epsilon(2.0, steps, DELTA,
                                        sampling_probability=Q)
             for steps in (10**9, 2 * 10**9)]
  assert [s.accountant for s in spent] == [RDP, RDP]
  assert [s.epsilon for s in spent] == [_rdp_epsilon(2.0, Q, 10**9),
                                        _rdp_epsilon(2.0, Q, 2 * 10**9)]
  warnings = [r.getMessage() for r in caplog.records
              if "PLD accounting" in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert "RDP accountant" in warnings[0]
  assert "noise_multiplier >= 0.5 with q <= 0.05" in warnings[0]


@pytest.mark.parametrize("sigma, q, steps", [(2.0, Q, STEPS), (3.0, 1.0, 50)])
def test_default_range_is_dp_accountings_pld_unchanged(sigma, q, steps):
  spent = accounting.compute_epsilon(sigma, steps, DELTA,
                                     sampling_probability=q)
  assert spent.accountant == PLD
  assert spent.epsilon == _default_pld_epsilon(sigma, q, steps)


def test_calibration_probes_small_noise_multipliers_in_bounded_cost():
  # A huge target: halving sigma (from 0.1, to skip the dearer PLDs of the
  # default range) goes well outside the default range, to about 0.02.
  target, steps = 1e5, 100
  sigma = accounting.calibrate_noise_multiplier(
      target, DELTA, steps, sampling_probability=1.0,
      max_noise_multiplier=0.1)
  spent = accounting.compute_epsilon(sigma, steps, DELTA,
                                     sampling_probability=1.0)
  assert 0.99 * target <= spent.epsilon <= target
  assert spent.epsilon >= _exact_gaussian_epsilon(sigma, steps)


@pytest.mark.parametrize("accountant", [PLD, RDP])
def test_calibration_refuses_a_target_beyond_the_accounted_range(accountant):
  # Halving sigma from 0.1 down to 1e-100 (PLD: coarse PLDs, then RDP).
  with pytest.raises(ValueError, match="target_epsilon=1e.250 is too large.*"
                     "below 1e-100 are not accounted"):
    accounting.calibrate_noise_multiplier(
        1e250, DELTA, 10, sampling_probability=1.0, accountant=accountant,
        max_noise_multiplier=0.1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(noise_multiplier=1e-101), r"noise_multiplier must be 0 \(no noise\) "
     "or >= 1e-100"),
    (dict(steps=10**19), "steps must be <= 1e.18"),
])
def test_out_of_range_arguments_are_refused_by_name(kwargs, match):
  kwargs = {**dict(noise_multiplier=1.0, steps=10, delta=DELTA,
                   sampling_probability=Q), **kwargs}
  with pytest.raises(ValueError, match=match):
    accounting.compute_epsilon(**kwargs)
