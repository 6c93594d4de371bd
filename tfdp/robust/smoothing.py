"""Randomized smoothing (Cohen, Rosenfeld & Kolter, 2019): L2 certificates.

The smoothed classifier of a deterministic base classifier f is

    g(x) = argmax_k P_{e ~ N(0, sigma^2 I)}(f(x + e) = k).

If pA_lower <= P(f(x + e) = cA) with pA_lower >= 1/2, then g(x + d) = cA for
every ||d||_2 < R with

    R = sigma * Phi^-1(pA_lower)

(Cohen et al., Thm. 1 with pB = 1 - pA). `certify` follows their CERTIFY:
guess cA from n0 noisy samples, bound pA from n fresh samples by a one-sided
Clopper-Pearson bound at level alpha, abstain when pA_lower < 1/2. The
statement holds with probability >= 1 - alpha over the Monte Carlo draws.
`predict` follows their PREDICT: the top class unless a two-sided binomial
test of the top two counts fails at level alpha (then abstain); it returns
a wrong (non-abstained) answer with probability <= alpha.
"""

from typing import Any, Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.robust import certification

ABSTAIN = -1


class _Noised:
  """predict_fn(x + N(0, sigma^2 I)), noise drawn by numpy per row."""

  def __init__(self, predict_fn, sigma: float, rng: np.random.Generator):
    self._predict_fn = predict_fn
    self._sigma = sigma
    self._rng = rng

  def __call__(self, x: tf.Tensor):
    x = x.numpy()
    noise = self._rng.normal(0.0, self._sigma, size=x.shape)
    return self._predict_fn(tf.constant((x + noise).astype(np.float32)))


def _check_common(sigma, alpha, num_classes, batch_size):
  if isinstance(num_classes, int) and num_classes == 1:
    raise ValueError("num_classes must be an integer >= 2, got 1")
  return (_validation.check_positive("sigma", sigma),
          _validation.check_open_unit_interval("alpha", alpha),
          _validation.check_positive_int("num_classes", num_classes),
          _validation.check_positive_int("batch_size", batch_size))


def certify(predict_fn: Callable[[tf.Tensor], Any],
            x: Any,
            sigma: float,
            n0: int,
            n: int,
            alpha: float,
            num_classes: int,
            batch_size: int = 1000,
            *,
            seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Cohen et al.'s CERTIFY for each example of x.

  For each x_i: counts0 from n0 noisy samples, cA = argmax counts0; counts
  from n further samples, nA = counts[cA];

      pA_lower = Beta^-1(alpha; nA, n - nA + 1)   (one-sided, level alpha),

  abstain if pA_lower < 1/2, else return cA with radius
  R = sigma * Phi^-1(pA_lower). With probability >= 1 - alpha (per example)
  the smoothed classifier is constant (= cA) on the open L2 ball of radius R.

  Args:
    predict_fn: the deterministic base classifier, float32 [B, ...] ->
      logits [B, num_classes]; Gaussian noise is added here, not by it.
    x: inputs [N, ...], floating point.
    sigma: noise standard deviation, > 0.
    n0: samples to select the class, an integer >= 1.
    n: samples to estimate pA, an integer >= 1.
    alpha: failure probability, in (0, 1).
    num_classes: number of classes, an integer >= 2.
    batch_size: noisy rows per call of predict_fn, an integer >= 1.
    seed: seed of the numpy noise generator, or None.

  Returns:
    (prediction, radius): int64 [N] with -1 (`ABSTAIN`) for abstentions, and
    float64 [N] L2 radii, 0 for abstentions.

  Raises:
    ValueError: for an argument out of range.
  """
  sigma, alpha, num_classes, batch_size = _check_common(
      sigma, alpha, num_classes, batch_size)
  n0 = _validation.check_positive_int("n0", n0)
  n = _validation.check_positive_int("n", n)
  noised = _Noised(predict_fn, sigma, np.random.default_rng(seed))
  counts0 = certification.sample_votes(noised, x, n0, num_classes,
                                       batch_size=batch_size)
  top = np.argmax(counts0, axis=-1)
  counts = certification.sample_votes(noised, x, n, num_classes,
                                      batch_size=batch_size)
  n_a = np.take_along_axis(counts, top[:, None], axis=-1)[:, 0]
  p_a = certification.clopper_pearson_lower(n_a, n, alpha)
  # pylint: disable=g-import-not-at-top
  from scipy import stats
  # pylint: enable=g-import-not-at-top
  certified = p_a >= 0.5
  radius = np.where(certified, sigma * stats.norm.ppf(np.maximum(p_a, 0.5)),
                    0.0)
  prediction = np.where(certified, top, ABSTAIN).astype(np.int64)
  return prediction, radius


def binomial_test_pvalue(n_a: Any, n_b: Any) -> np.ndarray:
  """Two-sided exact binomial test of p = 1/2 for n_a of m = n_a + n_b.

  For n_a >= n_b the Bin(m, 1/2) law is symmetric, so the outcomes at most as
  likely as n_a are {X >= n_a} and {X <= n_b}:

      pvalue = min(1, 2 P(X >= n_a)) = min(1, 2 * binom.sf(n_a - 1, m, 1/2)),

  the value of scipy.stats.binomtest(n_a, m, 0.5).pvalue.
  """
  # pylint: disable=g-import-not-at-top
  from scipy import stats
  # pylint: enable=g-import-not-at-top
  n_a = np.asarray(n_a)
  n_b = np.asarray(n_b)
  high = np.maximum(n_a, n_b)
  return np.minimum(1.0, 2 * stats.binom.sf(high - 1, n_a + n_b, 0.5))


def predict(predict_fn: Callable[[tf.Tensor], Any],
            x: Any,
            sigma: float,
            n: int,
            alpha: float,
            num_classes: int,
            batch_size: int = 1000,
            *,
            seed: Optional[int] = None) -> np.ndarray:
  """Cohen et al.'s PREDICT for each example of x.

  counts from n noisy samples; nA, nB the two largest counts (top class cA).
  Return cA if the two-sided binomial test of nA successes in nA + nB trials
  against p = 1/2 has p-value <= alpha, else abstain. The answer differs
  from the smoothed classifier's g(x) with probability <= alpha.

  Args:
    predict_fn: the deterministic base classifier (logits); noise is added
      here.
    x: inputs [N, ...], floating point.
    sigma: noise standard deviation, > 0.
    n: noisy samples per example, an integer >= 1.
    alpha: failure probability, in (0, 1).
    num_classes: number of classes, an integer >= 2.
    batch_size: noisy rows per call of predict_fn, an integer >= 1.
    seed: seed of the numpy noise generator, or None.

  Returns:
    Predictions, int64 [N], -1 (`ABSTAIN`) for abstentions.
  """
  sigma, alpha, num_classes, batch_size = _check_common(
      sigma, alpha, num_classes, batch_size)
  n = _validation.check_positive_int("n", n)
  noised = _Noised(predict_fn, sigma, np.random.default_rng(seed))
  counts = certification.sample_votes(noised, x, n, num_classes,
                                      batch_size=batch_size)
  order = np.argsort(-counts, axis=-1, kind="stable")
  top = order[:, 0]
  n_a = np.take_along_axis(counts, order[:, :1], axis=-1)[:, 0]
  n_b = np.take_along_axis(counts, order[:, 1:2], axis=-1)[:, 0]
  pvalue = binomial_test_pvalue(n_a, n_b)
  return np.where(pvalue <= alpha, top, ABSTAIN).astype(np.int64)
