"""The epsilon lower bounds on hand-computed counts."""

import math

import numpy as np
import pytest
from scipy import stats

from tfdp.audit import bounds


@pytest.mark.parametrize("successes,trials", [(0, 10), (3, 10), (57, 100),
                                              (100, 100), (1, 2000)])
def test_clopper_pearson_bounds_have_their_defining_tail(successes, trials):
  # p_lo: P[Bin(n, p_lo) >= k] = 1 - c;  p_hi: P[Bin(n, p_hi) <= k] = 1 - c.
  confidence = 0.975
  low = bounds.clopper_pearson_lower(successes, trials, confidence)
  high = bounds.clopper_pearson_upper(successes, trials, confidence)
  assert low < successes / trials < high or (successes in (0, trials))
  if successes:
    assert stats.binom.sf(successes - 1, trials, low) == pytest.approx(
        1 - confidence, rel=1e-6)
  else:
    assert low == 0.0
  if successes < trials:
    assert stats.binom.cdf(successes, trials, high) == pytest.approx(
        1 - confidence, rel=1e-6)
  else:
    assert high == 1.0


def test_perfect_separation_by_hand():
  # All 100 "in" runs caught, none of 100 "out": TPR_lo = 0.025^(1/100)
  # (each rate at 97.5% for 95% overall), FPR_hi = 1 - TPR_lo.
  tpr_lo = 0.025 ** (1 / 100)
  fpr_hi = 1 - tpr_lo
  expected = math.log(tpr_lo / fpr_hi)
  assert expected == pytest.approx(3.2813, abs=1e-4)
  assert bounds.epsilon_lower_bound(100, 100, 0, 100, delta=0.0) == (
      pytest.approx(expected, rel=1e-9))
  with_delta = math.log((tpr_lo - 0.01) / fpr_hi)
  assert bounds.epsilon_lower_bound(100, 100, 0, 100, delta=0.01) == (
      pytest.approx(with_delta, rel=1e-9))


def test_uses_the_complement_when_it_is_stronger():
  # TPR 1000/1000, FPR 500/1000: log(TPR/FPR) ~ log 2, while
  # (1 - FPR) / (1 - TPR) is large.
  tpr_lo = bounds.clopper_pearson_lower(1000, 1000, 0.975)
  fpr_hi = bounds.clopper_pearson_upper(500, 1000, 0.975)
  expected = math.log((1 - fpr_hi) / (1 - tpr_lo))
  assert expected > math.log(tpr_lo / fpr_hi)
  assert bounds.epsilon_lower_bound(1000, 1000, 500, 1000, delta=0.0) == (
      pytest.approx(expected, rel=1e-9))


def test_no_separation_gives_zero():
  assert bounds.epsilon_lower_bound(50, 100, 50, 100, delta=1e-5) == 0.0
  assert bounds.epsilon_lower_bound(0, 100, 100, 100, delta=1e-5) == 0.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(true_positives=5, positives=4), "true_positives"),
    (dict(negatives=0), "negatives"),
    (dict(delta=1.0), "delta"),
    (dict(confidence=1.0), "confidence"),
])
def test_bad_counts_name_the_argument(kwargs, match):
  arguments = dict(true_positives=1, positives=4, false_positives=1,
                   negatives=4, delta=0.0)
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=match):
    bounds.epsilon_lower_bound(**arguments)


def test_one_run_p_value_by_hand():
  # delta = 0: P[Bin(2, 1/2) >= 2] = 1/4 at epsilon 0.
  assert bounds.one_run_p_value(4, 2, 2, 0.0, 0.0) == pytest.approx(0.25)
  # delta > 0 adds 2 m delta max_i P[2 - i <= Bin < 2] / i = 2*4*delta*0.5
  # (i = 1: P[Bin = 1] = 1/2; i = 2: 3/4 / 2).
  assert bounds.one_run_p_value(4, 2, 2, 0.0, 0.01) == pytest.approx(0.29)
  p = 1 / (1 + math.exp(-1.5))
  assert bounds.one_run_p_value(100, 10, 8, 1.5, 0.0) == pytest.approx(
      stats.binom.sf(7, 10, p))


def test_one_run_bound_with_all_guesses_right_by_hand():
  # 2k guesses all right, delta 0: p-value p^(2k), p = 1 / (1 + e^-eps), so
  # the bound solves p^(2k) = alpha: eps = log(p / (1 - p)), p = alpha^(1/2k).
  rng = np.random.default_rng(0)
  included = rng.random(400) < 0.5
  scores = included + 0.01 * rng.random(400)
  result = bounds.one_run_epsilon_lower_bound(scores, included, delta=0.0,
                                              guess_counts=[50])
  p = 0.05 ** (1 / 100)
  assert result.epsilon == pytest.approx(math.log(p / (1 - p)), abs=1e-3)
  assert (result.true_positives, result.positives) == (100, 100)


def test_one_run_bonferroni_costs_confidence():
  rng = np.random.default_rng(1)
  included = rng.random(1000) < 0.5
  scores = included + rng.normal(size=1000)
  one = bounds.one_run_epsilon_lower_bound(scores, included, delta=1e-5,
                                           guess_counts=[100])
  many = bounds.one_run_epsilon_lower_bound(scores, included, delta=1e-5,
                                            guess_counts=[100, 200])
  # The same k judged at alpha / 2 can only give a smaller bound; a better
  # k may win.
  # pylint: disable-next=protected-access
  alone_at_half_alpha = bounds._one_run_epsilon(1000, 200, one.true_positives,
                                                1e-5, 0.025)
  assert alone_at_half_alpha <= one.epsilon
  assert many.epsilon >= alone_at_half_alpha


def test_scores_bound_holds_the_threshold_out():
  rng = np.random.default_rng(2)
  scores_in, scores_out = rng.normal(3, 1, 400), rng.normal(0, 1, 400)
  result = bounds.epsilon_lower_bound_from_scores(scores_in, scores_out,
                                                  delta=1e-5)
  # Counted on the held-out half only.
  assert result.positives == 200 and result.negatives == 200
  assert result.epsilon == pytest.approx(bounds.epsilon_lower_bound(
      result.true_positives, 200, result.false_positives, 200, delta=1e-5))
  assert 1.0 < result.epsilon < 6.0
  same = bounds.epsilon_lower_bound_from_scores(rng.normal(0, 1, 400),
                                                rng.normal(0, 1, 400),
                                                delta=1e-5)
  assert same.epsilon < 0.5


def test_simulated_threshold_separates_separated_scores():
  threshold = bounds.simulated_threshold(
      np.arange(100.0, 200.0), np.arange(0.0, 100.0), runs_in=50,
      runs_out=50, delta=1e-5)
  assert 99.0 < threshold <= 100.0
