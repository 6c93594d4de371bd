"""Tests for tfdp.robust.certification against independent computations."""

import math
import pathlib
import re

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from tfdp.robust import certification

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("k,n,alpha", [
    (0, 10, 0.05), (10, 10, 0.05), (3, 10, 0.05), (1, 1, 0.1),
    (0, 1000, 0.001), (1000, 1000, 0.001), (517, 1000, 0.01),
    (42, 100, 0.2)])
def test_clopper_pearson_matches_scipy_binomtest(k, n, alpha):
  expected = stats.binomtest(k, n).proportion_ci(
      confidence_level=1 - alpha, method="exact")
  lower, upper = certification.clopper_pearson(k, n, alpha)
  np.testing.assert_allclose([lower, upper], [expected.low, expected.high],
                             rtol=1e-9, atol=1e-12)


def test_clopper_pearson_is_vectorised():
  k = np.array([[0, 5], [9, 10]])
  lower, upper = certification.clopper_pearson(k, 10, 0.05)
  assert lower.shape == upper.shape == (2, 2)
  for (i, j), kij in np.ndenumerate(k):
    ci = stats.binomtest(int(kij), 10).proportion_ci(0.95, method="exact")
    assert lower[i, j] == pytest.approx(ci.low, abs=1e-12)
    assert upper[i, j] == pytest.approx(ci.high, abs=1e-12)


def test_clopper_pearson_lower_one_sided():
  # k = n: Beta(n, 1) has cdf p^n, so the alpha-quantile is alpha^(1/n).
  assert certification.clopper_pearson_lower(50, 50, 0.01) == pytest.approx(
      0.01**(1 / 50), rel=1e-12)
  # One-sided at alpha is the lower end of the two-sided at 2 alpha.
  ci = stats.binomtest(37, 60).proportion_ci(0.9, method="exact")
  assert certification.clopper_pearson_lower(37, 60, 0.05) == pytest.approx(
      ci.low, rel=1e-9)
  assert certification.clopper_pearson_lower(0, 60, 0.05) == 0


@pytest.mark.parametrize("bad", [
    dict(successes=11, trials=10, alpha=0.05),
    dict(successes=-1, trials=10, alpha=0.05),
    dict(successes=2.5, trials=10, alpha=0.05),
    dict(successes=1, trials=0, alpha=0.05),
    dict(successes=1, trials=10, alpha=0.0),
    dict(successes=1, trials=10, alpha=1.0)])
def test_clopper_pearson_rejects_bad_arguments(bad):
  with pytest.raises(ValueError, match="successes|trials|alpha"):
    certification.clopper_pearson(**bad)


def test_class_probability_bounds_bonferroni_by_hand():
  counts = np.array([[70, 20, 10], [5, 5, 90]])
  top, p1, p2 = certification.class_probability_bounds(counts, 0.03)
  np.testing.assert_array_equal(top, [0, 2])
  # Each class's interval at confidence 1 - 0.03 / 3 = 0.99.
  def ci(k):
    return stats.binomtest(k, 100).proportion_ci(0.99, method="exact")
  assert p1[0] == pytest.approx(ci(70).low, rel=1e-9)
  assert p2[0] == pytest.approx(ci(20).high, rel=1e-9)
  assert p1[1] == pytest.approx(ci(90).low, rel=1e-9)
  assert p2[1] == pytest.approx(ci(5).high, rel=1e-9)
  # Without the correction the bounds would be tighter.
  assert p1[0] < ci_uncorrected_low(70, 100, 0.03)


def ci_uncorrected_low(k, n, alpha):
  return stats.binomtest(k, n).proportion_ci(1 - alpha, method="exact").low


def test_class_probability_bounds_tie_is_never_certified():
  top, p1, p2 = certification.class_probability_bounds([[40, 40, 20]], 0.05)
  assert top[0] == 0 and p1[0] < p2[0]
  assert not certification.laplace_certified(p1, p2, 0.0, 1.0, 1.0)[0]


def test_class_probability_bounds_joint_coverage():
  # Statistical check of the joint statement: over many simulated count
  # vectors, p1 <= P(top) and p2 >= max other P fail together at most alpha
  # of the time (up to a binomial tolerance on the repetitions).
  rng = np.random.default_rng(0)
  probs = np.array([0.45, 0.44, 0.11])
  reps, alpha = 4000, 0.1
  counts = rng.multinomial(50, probs, size=reps)
  top, p1, p2 = certification.class_probability_bounds(counts, alpha)
  others = np.array([np.max(np.delete(probs, t)) for t in top])
  failures = np.mean((p1 > probs[top]) | (p2 < others))
  assert failures <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


def test_laplace_hand_computed():
  # p1 = 0.8, p2 = 0.1, b = Delta = 1: radius ln(8) / 2 = 1.0397.
  radius = certification.laplace_radius(0.8, 0.1, 1.0, 1.0)
  assert radius == pytest.approx(math.log(8) / 2, rel=1e-12)
  assert radius == pytest.approx(1.0397, abs=1e-4)
  assert certification.laplace_certified(0.8, 0.1, 1.0, 1.0, 1.0)
  assert not certification.laplace_certified(0.8, 0.1, 1.05, 1.0, 1.0)
  # The radius scales as b / Delta.
  assert certification.laplace_radius(0.8, 0.1, 2.0, 0.5) == pytest.approx(
      math.log(8) / 8)
  assert certification.laplace_certified(0.8, 0.1, 0.25, 2.0, 0.5)
  assert not certification.laplace_certified(0.8, 0.1, 0.27, 2.0, 0.5)


def test_laplace_certified_agrees_with_radius():
  rng = np.random.default_rng(1)
  p1 = rng.uniform(size=500)
  p2 = rng.uniform(size=500)
  kappa = rng.uniform(0, 2, size=500)
  certified = certification.laplace_certified(p1, p2, kappa, 1.5, 0.7)
  radius = certification.laplace_radius(p1, p2, 1.5, 0.7)
  # Away from float ties, certified at kappa <=> kappa < radius.
  away = np.abs(kappa - radius) > 1e-9
  np.testing.assert_array_equal(certified[away], (kappa < radius)[away])
  assert certified.sum() > 20


@pytest.mark.parametrize("p1,p2", [(0.3, 0.3), (0.2, 0.5), (0.0, 0.0)])
def test_p1_at_most_p2_never_certifies(p1, p2):
  for kappa in (0.0, 1e-9, 0.5):
    assert not certification.laplace_certified(p1, p2, kappa, 1.0, 1.0)
    assert not certification.gaussian_certified(p1, p2, kappa, 1.0, 1.0,
                                                1e-5)
  assert certification.laplace_radius(p1, p2, 1.0, 1.0) == 0
  assert certification.gaussian_radius(p1, p2, 1.0, 1.0, 1e-5) == 0


def _gaussian_condition(p1, p2, kappa, sensitivity, sigma, delta):
  eps = math.sqrt(2 * math.log(1.25 / delta)) * sensitivity * kappa / sigma
  holds = p1 > math.exp(2 * eps) * p2 + (1 + math.exp(eps)) * delta
  return eps <= 1 and holds


def _bisect_radius(p1, p2, sensitivity, sigma, delta):
  lo, hi = 0.0, 100.0
  if not _gaussian_condition(p1, p2, 0.0, sensitivity, sigma, delta):
    return 0.0
  for _ in range(200):
    mid = (lo + hi) / 2
    if _gaussian_condition(p1, p2, mid, sensitivity, sigma, delta):
      lo = mid
    else:
      hi = mid
  return lo


def test_gaussian_hand_computed_with_delta():
  delta, sigma, sensitivity = 1e-3, 1.0, 1.0
  c = math.sqrt(2 * math.log(1.25 / delta))  # eps per unit kappa.
  p1, p2 = 0.6, 0.2
  # By hand: u = e^eps solves 0.2 u^2 + 1e-3 u + (1e-3 - 0.6) = 0.
  u = (-1e-3 + math.sqrt(1e-6 + 4 * 0.2 * 0.599)) / (2 * 0.2)
  expected = math.log(u) / c
  assert 0 < math.log(u) < 1  # inside the validity region eps <= 1
  radius = certification.gaussian_radius(p1, p2, sensitivity, sigma, delta)
  assert radius == pytest.approx(expected, rel=1e-9)
  assert radius == pytest.approx(
      _bisect_radius(p1, p2, sensitivity, sigma, delta), rel=1e-9)
  assert certification.gaussian_certified(p1, p2, 0.99 * radius,
                                          sensitivity, sigma, delta)
  assert not certification.gaussian_certified(p1, p2, 1.01 * radius,
                                              sensitivity, sigma, delta)
  # p1 = 0.8, p2 = 0.1: the root gives eps* = ln 2.82 > 1, so the validity
  # region eps <= 1 caps the radius at 1 / c.
  u = (-1e-3 + math.sqrt(1e-6 + 4 * 0.1 * 0.799)) / (2 * 0.1)
  assert math.log(u) > 1
  assert certification.gaussian_radius(0.8, 0.1, 1.0, 1.0, delta) == (
      pytest.approx(1 / c, rel=1e-12))
  # delta enters: without it (delta -> tiny) the bound p1 > e^{2eps} p2 + ...
  # would hold at kappa where delta = 0.05 fails it.
  assert not certification.gaussian_certified(0.3, 0.2, 0.0, 1.0, 1.0, 0.05)
  assert certification.gaussian_certified(0.3, 0.2, 0.0, 1.0, 1.0, 0.01)
  assert certification.gaussian_radius(0.3, 0.2, 1.0, 1.0, 0.05) == 0


def test_gaussian_refuses_beyond_eps_one():
  delta = 1e-5
  c = math.sqrt(2 * math.log(1.25 / delta))
  # p1 = 1, p2 = 0: the bound holds for every eps, so only eps <= 1 limits.
  assert certification.gaussian_radius(1.0, 0.0, 1.0, 2.0, delta) == (
      pytest.approx(2.0 / c))
  assert certification.gaussian_certified(1.0, 0.0, 0.999 * 2 / c, 1.0, 2.0,
                                          delta)
  assert not certification.gaussian_certified(1.0, 0.0, 1.001 * 2 / c, 1.0,
                                              2.0, delta)


def test_gaussian_radius_matches_bisection_on_random_bounds():
  rng = np.random.default_rng(2)
  p1 = rng.uniform(0.3, 1.0, size=40)
  p2 = rng.uniform(0.0, 0.3, size=40)
  radius = certification.gaussian_radius(p1, p2, 0.7, 1.3, 1e-4)
  expected = [_bisect_radius(a, b, 0.7, 1.3, 1e-4) for a, b in zip(p1, p2)]
  np.testing.assert_allclose(radius, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: certification.laplace_certified(1.2, 0.1, 1.0, 1.0, 1.0), "p1"),
    (lambda: certification.laplace_certified(0.8, -0.1, 1.0, 1.0, 1.0),
     "p2"),
    (lambda: certification.laplace_certified(0.8, 0.1, -1.0, 1.0, 1.0),
     "kappa"),
    (lambda: certification.laplace_radius(0.8, 0.1, 0.0, 1.0),
     "sensitivity"),
    (lambda: certification.laplace_radius(0.8, 0.1, 1.0, -2.0), "scale"),
    (lambda: certification.gaussian_radius(0.8, 0.1, 1.0, 0.0, 1e-5),
     "sigma"),
    (lambda: certification.gaussian_certified(0.8, 0.1, 1.0, 1.0, 1.0, 1.0),
     "delta"),
    (lambda: certification.class_probability_bounds([[1, 2]], 2.0), "alpha"),
    (lambda: certification.certified_accuracy([True], [1.0, 2.0], [0.1]),
     "correct and radii"),
])
def test_bad_arguments_name_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_sample_votes_deterministic_rows_across_batches():
  x = np.array([[0.0], [1.0], [2.0]], np.float32)

  def predict_fn(xb):  # class = the input value, no noise
    return tf.one_hot(tf.cast(xb[:, 0], tf.int32), 4)

  counts = certification.sample_votes(predict_fn, x, 7, 4, batch_size=5)
  np.testing.assert_array_equal(counts, [[7, 0, 0, 0], [0, 7, 0, 0],
                                         [0, 0, 7, 0]])


def test_sample_votes_follows_vote_distribution():
  tf.random.set_seed(0)
  probs = np.array([0.6, 0.3, 0.1])

  def predict_fn(xb):  # a noisy classifier: fresh votes per row and call
    votes = tf.random.categorical(
        tf.math.log(tf.tile(probs[None].astype(np.float32),
                            [tf.shape(xb)[0], 1])), 1)[:, 0]
    return tf.one_hot(votes, 3)

  n = 2000
  counts = certification.sample_votes(predict_fn, np.zeros((2, 5)), n, 3,
                                      batch_size=333)
  assert counts.dtype == np.int64
  np.testing.assert_array_equal(counts.sum(axis=1), [n, n])
  tolerance = 4.5 * np.sqrt(probs * (1 - probs) * n)
  assert np.all(np.abs(counts - n * probs) < tolerance)


def test_sample_votes_rejects_wrong_logit_shape():
  with pytest.raises(ValueError, match="predict_fn"):
    certification.sample_votes(lambda xb: tf.zeros([len(xb), 3]),
                               np.zeros((2, 1)), 4, 5)
  with pytest.raises(ValueError, match="num_classes"):
    certification.sample_votes(lambda xb: xb, np.zeros((2, 1)), 4, 1)


def test_laplace_empirical_soundness_1d():
  # Noisy 1-D classifier: vote = [x + Lap(b) > 0]; L1 sensitivity 1 per unit
  # attack. P(vote = 1 | x) = 1 - exp(-x / b) / 2 for x > 0, so the expected
  # vote flips exactly at |x|: every certified radius must be <= |x|.
  tf.random.set_seed(3)
  b = 0.5
  x = np.array([[0.05], [0.3], [0.8], [-1.5], [2.5]], np.float32)

  def predict_fn(xb):
    u1 = tf.random.uniform(tf.shape(xb), 1e-12, 1.0)
    u2 = tf.random.uniform(tf.shape(xb), 1e-12, 1.0)
    laplace = b * (tf.math.log(u1) - tf.math.log(u2))  # Exp(b) - Exp(b)
    z = xb + laplace
    return tf.concat([-z, z], axis=-1)

  counts = certification.sample_votes(predict_fn, x, 2000, 2,
                                      batch_size=5000)
  top, p1, p2 = certification.class_probability_bounds(counts, 0.001)
  radius = certification.laplace_radius(p1, p2, 1.0, b)
  np.testing.assert_array_equal(top[1:], (x[1:, 0] > 0).astype(int))
  assert np.all(radius <= np.abs(x[:, 0]))
  assert np.all(radius[2:] > 0)  # far points do get certified
  # The radius from the exact probabilities is below |x| too.
  q = np.exp(-np.abs(x[:, 0]) / b) / 2
  exact = certification.laplace_radius(1 - q, q, 1.0, b)
  assert np.all(exact <= np.abs(x[:, 0]))
  assert np.all(radius <= exact + 1e-12)


def test_certified_accuracy():
  correct = np.array([True, True, False, True])
  radii = np.array([0.5, 0.1, 0.9, 0.0])  # the last one abstained
  np.testing.assert_allclose(
      certification.certified_accuracy(correct, radii, [0.0, 0.1, 0.3, 1.0]),
      [0.5, 0.25, 0.25, 0.0])


def test_certification_md_example_runs():
  (example,) = re.findall(r"```python\n(.*?)```",
                          (ROOT / "docs" / "certification.md").read_text(),
                          flags=re.S)
  namespace = {}
  # pylint: disable=exec-used
  exec(compile(example, "certification.md", "exec"), namespace)
  # pylint: enable=exec-used
  accuracy = namespace["accuracy"]
  assert np.all((0 <= accuracy) & (accuracy <= 1))
  assert np.all(np.diff(accuracy) <= 0)  # non-increasing in kappa
  assert accuracy[0] > 0.5
  assert np.all(namespace["smoothed_radius"] >= 0)
