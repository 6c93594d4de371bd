"""Tests for tfdp.robust.smoothing against closed forms."""

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from tfdp.robust import certification
from tfdp.robust import smoothing


def constant_fn(xb):
  """Always class 2 of 3, whatever the (noisy) input."""
  return tf.tile(tf.constant([[0.0, 1.0, 5.0]]), [tf.shape(xb)[0], 1])


def linear_fn(xb):
  """1-D two-class linear classifier: class 1 iff x > 0."""
  return tf.concat([-xb, xb], axis=-1)


def test_constant_classifier_radius_is_exact():
  n, alpha, sigma = 200, 0.01, 0.4
  x = np.zeros((3, 2, 2), np.float32)
  prediction, radius = smoothing.certify(constant_fn, x, sigma, 10, n, alpha,
                                         3, batch_size=256, seed=0)
  np.testing.assert_array_equal(prediction, [2, 2, 2])
  # n/n successes: the one-sided CP lower bound is alpha^(1/n) exactly.
  expected = sigma * stats.norm.ppf(alpha**(1 / n))
  np.testing.assert_allclose(radius, expected, rtol=1e-12)


def test_linear_classifier_matches_closed_form():
  # g(x) has P(class 1) = Phi(x / sigma), so the exact Cohen radius is
  # sigma * Phi^-1(Phi(|x| / sigma)) = |x|.
  sigma, n, alpha = 0.5, 20000, 0.001
  x = np.array([[0.3], [-0.6], [1.0]], np.float32)
  prediction, radius = smoothing.certify(linear_fn, x, sigma, 100, n, alpha,
                                         2, batch_size=20000, seed=1)
  np.testing.assert_array_equal(prediction, [1, 0, 1])
  p_a = stats.norm.cdf(np.abs(x[:, 0]) / sigma)
  # The estimated pA_lower (recovered from the radius) sits inside a CP
  # interval around the count that would give it, and below the true pA.
  p_lower = stats.norm.cdf(radius / sigma)
  assert np.all(p_lower <= p_a)
  # Tolerance from n: the smallest count plausible at level 1e-6 gives the
  # smallest radius the estimate can reasonably take.
  k_min = stats.binom.ppf(1e-6, n, p_a)
  radius_min = sigma * stats.norm.ppf(
      certification.clopper_pearson_lower(k_min.astype(int), n, alpha))
  assert np.all(radius >= radius_min)
  assert np.all(radius <= np.abs(x[:, 0]))
  np.testing.assert_allclose(radius, np.abs(x[:, 0]), atol=0.05)


def test_estimated_counts_within_clopper_pearson_of_closed_form():
  sigma, n = 0.5, 4000
  x = np.array([[0.2], [-0.4]], np.float32)
  # pylint: disable=protected-access
  noised = smoothing._Noised(linear_fn, sigma, np.random.default_rng(2))
  # pylint: enable=protected-access
  counts = certification.sample_votes(noised, x, n, 2, batch_size=8000)
  lower, upper = certification.clopper_pearson(counts[:, 1], n, 1e-6)
  p1 = stats.norm.cdf(x[:, 0] / sigma)
  assert np.all((lower <= p1) & (p1 <= upper))


def test_abstains_when_pa_lower_below_half():
  x = np.array([[0.0], [0.005]], np.float32)
  prediction, radius = smoothing.certify(linear_fn, x, 1.0, 50, 1000, 0.001,
                                         2, seed=3)
  np.testing.assert_array_equal(prediction, [smoothing.ABSTAIN] * 2)
  np.testing.assert_array_equal(radius, [0.0, 0.0])
  assert np.all(certification.certified_accuracy(prediction == 1, radius,
                                                 [0.0]) == 0)


def test_empirical_soundness_1d():
  # For every certified point, the closed-form smoothed prediction
  # (class 1 iff x + d > 0) is unchanged for all |d| < r: that holds iff the
  # prediction is sign(x) and r <= |x| (d = -x flips it).
  rng = np.random.default_rng(4)
  x = rng.uniform(-2, 2, size=(200, 1)).astype(np.float32)
  sigma = 0.5
  prediction, radius = smoothing.certify(linear_fn, x, sigma, 20, 400, 1e-4,
                                         2, batch_size=20000, seed=5)
  certified = prediction != smoothing.ABSTAIN
  assert certified.sum() > 150
  truth = (x[:, 0] > 0).astype(int)
  flipped = 0
  for i in np.flatnonzero(certified):
    d = np.linspace(-radius[i], radius[i], 101)[1:-1]
    flipped += int(np.any(((x[i, 0] + d) > 0).astype(int) != prediction[i]))
  assert flipped == 0
  np.testing.assert_array_equal(prediction[certified], truth[certified])
  assert np.all(radius[certified] <= np.abs(x[certified, 0]))


def test_binomial_test_pvalue_matches_scipy():
  for n_a, n_b in [(10, 0), (7, 3), (5, 5), (60, 40), (3, 9)]:
    assert smoothing.binomial_test_pvalue(n_a, n_b) == pytest.approx(
        stats.binomtest(max(n_a, n_b), n_a + n_b, 0.5).pvalue, rel=1e-9)


def test_predict_abstains_near_boundary_and_answers_far():
  x = np.array([[0.0], [1.5], [-1.5]], np.float32)
  prediction = smoothing.predict(linear_fn, x, 0.5, 500, 0.001, 2, seed=6)
  np.testing.assert_array_equal(prediction, [smoothing.ABSTAIN, 1, 0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma=0.0), "sigma"), (dict(n0=0), "n0"), (dict(n=-1), "n"),
    (dict(alpha=1.5), "alpha"), (dict(num_classes=1), "num_classes"),
    (dict(batch_size=0), "batch_size")])
def test_certify_rejects_bad_arguments(kwargs, match):
  args = dict(sigma=0.5, n0=10, n=10, alpha=0.01, num_classes=2,
              batch_size=10)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    smoothing.certify(linear_fn, np.zeros((1, 1), np.float32), **args)
