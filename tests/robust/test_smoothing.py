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


def _linear_model():
  """Keras form of linear_fn: logits (-x, x) for 1-D inputs."""
  model = tf.keras.Sequential([
      tf.keras.Input((1,)), tf.keras.layers.Dense(2, use_bias=False)])
  model.layers[0].set_weights([np.array([[-1.0, 1.0]], np.float32)])
  return model


def test_evaluate_matches_closed_forms_and_flips_no_certified_point():
  # f(x) = 1 iff x > 0. Smoothed: g(x) = f(x); the exact radius is |x|; an
  # L2 attack of radius r flips exactly the points with |x| < r (PGD finds
  # it: the gradient points straight at the boundary).
  rng = np.random.default_rng(8)
  x = rng.uniform(-1, 1, size=(120, 1)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int64)
  y[:10] = 1 - y[:10]   # Ten wrong labels: never certified correct.
  sigma, radii = 0.5, [0.1, 0.3]
  tf.random.set_seed(0)
  result = smoothing.evaluate(
      _linear_model(), x, y, sigma=sigma, radii=radii, num_classes=2, n0=50,
      n=2000, alpha=0.001, attack_steps=10, clip_min=None, clip_max=None,
      seed=9)
  truth = (x[:, 0] > 0).astype(np.int64)
  assert result["base_accuracy"] == pytest.approx(np.mean(truth == y))
  # Certified accuracy below the exact one (certificates are lower bounds),
  # and not far below it at n = 2000.
  for r in radii:
    exact = np.mean((truth == y) & (np.abs(x[:, 0]) > r))
    assert exact - 0.2 <= result["certified_accuracy"][f"{r:g}"] <= exact
    attacked = result["pgd"][f"{r:g}"]
    # f is attacked: it survives exactly where |x| > r (and was right).
    assert attacked["base_accuracy"] == pytest.approx(exact)
    assert attacked["accuracy"] <= np.mean(truth == y)
    assert attacked["certified"] >= result["certified_accuracy"][
        f"{r:g}"] * len(x)
    assert attacked["flipped"] == 0
  assert 0 <= result["abstained"] < 0.2
  assert result["accuracy"] <= np.mean(truth == y)


def test_evaluate_against_the_soft_smoothed_surrogate():
  x = np.array([[0.05], [-0.8], [0.9]], np.float32)
  y = np.array([1, 0, 1])
  tf.random.set_seed(1)
  result = smoothing.evaluate(
      _linear_model(), x, y, sigma=0.25, radii=[0.1, 0.5], num_classes=2,
      n0=20, n=500, attack_steps=10, attack_noise_samples=16,
      clip_min=None, clip_max=None, seed=2)
  # The surrogate's gradient also points at the boundary: the point at 0.05
  # falls at radius 0.1, the far ones survive 0.5; certified ones never flip.
  assert result["pgd"]["0.1"]["base_accuracy"] == pytest.approx(2 / 3)
  assert result["pgd"]["0.5"]["base_accuracy"] == pytest.approx(2 / 3)
  assert result["pgd"]["0.1"]["flipped"] == 0
  assert result["pgd"]["0.5"]["flipped"] == 0
  assert result["attack_noise_samples"] == 16


def test_soft_smoothed_is_log_of_mean_softmax():
  model = _linear_model()
  surrogate = smoothing.SoftSmoothed(model, 0.5, 4000)
  x = tf.constant([[0.3], [-0.2]])
  probabilities = tf.exp(surrogate(x)).numpy()
  np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
  # E softmax((-z, z))_1 = E sigmoid(2 z), z ~ N(x, 0.25): by quadrature.
  grid = np.linspace(-6, 6, 4001)
  weights = stats.norm.pdf(grid)
  for row, value in enumerate([0.3, -0.2]):
    expected = np.sum(weights / (1 + np.exp(-2 * (value + 0.5 * grid)))) / (
        weights.sum())
    # Std of the mean of 4000 sigmoids (each in [0, 1]) <= 0.5 / sqrt(4000).
    assert abs(probabilities[row, 1] - expected) < 6 * 0.5 / np.sqrt(4000)


@pytest.mark.parametrize("kwargs,match", [
    (dict(radii=[0.0]), "radii"), (dict(attack_votes=0), "attack_votes"),
    (dict(attack_noise_samples=-1), "attack_noise_samples"),
    (dict(attack_batch_size=0), "attack_batch_size")])
def test_evaluate_rejects_bad_arguments(kwargs, match):
  args = dict(sigma=0.5, radii=[0.1], num_classes=2, n0=5, n=5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    smoothing.evaluate(_linear_model(), np.zeros((2, 1), np.float32),
                       np.zeros(2, np.int64), **args)


def test_radius_is_cohens_theorem_1():
  # sigma / 2 (Phi^-1(p1) - Phi^-1(p2)); sigma Phi^-1(p1) when p2 = 1 - p1.
  p1 = np.array([0.9, 0.6, 0.5, 0.3])
  np.testing.assert_allclose(smoothing.radius(p1, 1 - p1, 0.5),
                             [0.5 * stats.norm.ppf(0.9),
                              0.5 * stats.norm.ppf(0.6), 0.0, 0.0])
  assert smoothing.radius(0.7, 0.1, 1.0) == pytest.approx(
      0.5 * (stats.norm.ppf(0.7) - stats.norm.ppf(0.1)))
  assert smoothing.radius(1.0, 0.0, 1.0) == np.inf
  with pytest.raises(ValueError, match="sigma"):
    smoothing.radius(0.9, 0.1, 0.0)
  with pytest.raises(ValueError, match="p1"):
    smoothing.radius(1.2, 0.1, 1.0)
