"""Monte Carlo certification of noisy classifiers (PixelDP-style bounds).

A noisy classifier (a model whose noise layer stays active at inference)
votes once per forward pass: the vote is the arg-max of its logits. Its
*expected-vote* (smoothed) prediction at x is argmax_k P(vote = k | x). This
module

1. counts votes over n noise draws (`sample_votes`),
2. turns counts into simultaneous Clopper-Pearson bounds with a Bonferroni
   correction over the K classes (`clopper_pearson`,
   `class_probability_bounds`): p1 <= P(vote = top) and
   p2 >= max_{k != top} P(vote = k), jointly with probability >= 1 - alpha
   over the draws,
3. decides PixelDP certificates (Lecuyer et al., 2019) for Laplace and
   Gaussian noise calibrated to a unit attack (`laplace_certified`,
   `laplace_radius`, `gaussian_certified`, `gaussian_radius`),
4. summarises certified accuracy at several attack sizes
   (`certified_accuracy`).

The PixelDP condition. If the vote, as a randomized function A of the input,
is (eps, delta)-DP with respect to changes ||x - x'||_p <= kappa, then for
every class k (the vote is one-hot, so E[A_k(x)] = P(vote = k | x))

    P_k(x') <= e^eps P_k(x) + delta   and   P_k(x) <= e^eps P_k(x') + delta.

Hence P_top(x') >= (p1 - delta) e^-eps and P_k(x') <= e^eps p2 + delta for
k != top, and the expected-vote prediction cannot change anywhere in the ball
when (p1 - delta) e^-eps > e^eps p2 + delta, that is

    p1 > e^(2 eps) p2 + (1 + e^eps) delta.                       (PixelDP)

The radii here are derived from this condition and from the epsilon of the
mechanism (see docs/certification.md), not from the constants of StoBatch's
released code, which changed the formula after release and used different
constants between scripts.
"""

import math
from typing import Any, Callable, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfdp import _validation

ArrayLike = Union[float, Sequence[float], np.ndarray]


def _check_alpha(alpha: Any) -> float:
  return _validation.check_open_unit_interval("alpha", alpha)


def _check_probabilities(name: str, value: Any) -> np.ndarray:
  """`value` as a float64 array with entries in [0, 1], else raises."""
  array = np.asarray(value, dtype=np.float64)
  if not np.all((array >= 0) & (array <= 1)):  # Also rejects NaN.
    raise ValueError(f"{name} must hold probabilities in [0, 1], got "
                     f"{value!r}")
  return array


def _check_kappa(kappa: Any) -> np.ndarray:
  array = np.asarray(kappa, dtype=np.float64)
  if not np.all(np.isfinite(array) & (array >= 0)):
    raise ValueError(f"kappa must hold finite attack sizes >= 0, got "
                     f"{kappa!r}")
  return array


def sample_votes(predict_fn: Callable[[tf.Tensor], Any],
                 x: Any,
                 num_samples: int,
                 num_classes: int,
                 *,
                 batch_size: int = 1000) -> np.ndarray:
  """Counts the arg-max votes of a noisy classifier over `num_samples` draws.

  Every (example, draw) pair is one row of a forward pass; the rows are
  streamed through `predict_fn` in batches of `batch_size` rows, each batch
  holding consecutive draws of consecutive examples, and

      counts[i, k] = #{draws j : argmax_c predict_fn(x_i)_j[c] = k}.

  `predict_fn` must draw its noise afresh on every call and independently for
  every row of a batch (as a Keras noise layer active at inference does), so
  that the draws of one example are i.i.d.

  Args:
    predict_fn: maps a float32 batch [B, ...] to logits (or scores)
      [B, num_classes].
    x: inputs [N, ...], floating point.
    num_samples: noise draws per example, an integer >= 1.
    num_classes: number of classes K, an integer >= 2.
    batch_size: rows per call of `predict_fn`, an integer >= 1.

  Returns:
    Vote counts, an int64 array [N, num_classes] whose rows sum to
    `num_samples`.

  Raises:
    ValueError: for a bad argument or logits of the wrong shape.
  """
  num_samples = _validation.check_positive_int("num_samples", num_samples)
  num_classes = _validation.check_positive_int("num_classes", num_classes)
  if num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got "
                     f"{num_classes!r}")
  batch_size = _validation.check_positive_int("batch_size", batch_size)
  x = _validation.check_float_batch("x", x)
  counts = np.zeros((len(x), num_classes), dtype=np.int64)
  total = len(x) * num_samples
  for start in range(0, total, batch_size):
    rows = np.arange(start, min(start + batch_size, total)) // num_samples
    logits = predict_fn(tf.constant(x[rows]))
    if tuple(logits.shape) != (len(rows), num_classes):
      raise ValueError(f"predict_fn must return logits [batch, num_classes] "
                       f"= [{len(rows)}, {num_classes}], got shape "
                       f"{tuple(logits.shape)}")
    votes = np.asarray(tf.argmax(logits, axis=-1))
    np.add.at(counts, (rows, votes), 1)
  return counts


def _check_counts(successes: Any, trials: Any) -> Tuple[np.ndarray,
                                                        np.ndarray]:
  k = np.asarray(successes)
  n = np.asarray(trials)
  for name, value in (("successes", k), ("trials", n)):
    if not (np.issubdtype(value.dtype, np.integer) or
            (np.issubdtype(value.dtype, np.floating) and
             np.all(value == np.round(value)))):
      raise ValueError(f"{name} must hold integers, got {value!r}")
  if np.any(n < 1):
    raise ValueError(f"trials must be integers >= 1, got {trials!r}")
  if np.any(k < 0) or np.any(k > n):
    raise ValueError(f"successes must be integers in [0, trials], got "
                     f"{successes!r} for trials {trials!r}")
  return np.broadcast_arrays(k.astype(np.float64), n.astype(np.float64))


def _beta_ppf(q: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  # pylint: disable=g-import-not-at-top
  from scipy import stats
  # pylint: enable=g-import-not-at-top
  # The degenerate parameters (a or b = 0) are masked by the callers; give
  # scipy valid ones there to keep it quiet.
  return stats.beta.ppf(q, np.maximum(a, 1), np.maximum(b, 1))


def clopper_pearson(successes: Any, trials: Any,
                    alpha: float) -> Tuple[np.ndarray, np.ndarray]:
  """Two-sided exact (Clopper-Pearson) binomial interval at level 1 - alpha.

  For k successes in n trials,

      lower = Beta^-1(alpha / 2; k, n - k + 1)   (0 when k = 0),
      upper = Beta^-1(1 - alpha / 2; k + 1, n - k)   (1 when k = n),

  so that P(lower <= p <= upper) >= 1 - alpha for every true p, each side
  failing with probability <= alpha / 2.

  Args:
    successes: integer counts k, any shape broadcastable with `trials`.
    trials: integer counts n >= 1.
    alpha: total miscoverage, in (0, 1).

  Returns:
    (lower, upper), float64 arrays of the broadcast shape.

  Raises:
    ValueError: for non-integer counts, k outside [0, n], or alpha outside
      (0, 1).
  """
  alpha = _check_alpha(alpha)
  k, n = _check_counts(successes, trials)
  lower = np.where(k == 0, 0.0, _beta_ppf(alpha / 2, k, n - k + 1))
  upper = np.where(k == n, 1.0, _beta_ppf(1 - alpha / 2, k + 1, n - k))
  return lower, upper


def clopper_pearson_lower(successes: Any, trials: Any,
                          alpha: float) -> np.ndarray:
  """One-sided exact lower confidence bound at level 1 - alpha.

      lower = Beta^-1(alpha; k, n - k + 1)   (0 when k = 0),

  so that P(lower <= p) >= 1 - alpha; for k = n it is alpha^(1/n). This is
  the bound of Cohen et al.'s CERTIFY (statsmodels' proportion_confint with
  2 alpha, method "beta").

  Args:
    successes: integer counts k, any shape broadcastable with `trials`.
    trials: integer counts n >= 1.
    alpha: miscoverage, in (0, 1).

  Returns:
    The lower bounds, a float64 array of the broadcast shape.

  Raises:
    ValueError: as `clopper_pearson`.
  """
  alpha = _check_alpha(alpha)
  k, n = _check_counts(successes, trials)
  return np.where(k == 0, 0.0, _beta_ppf(alpha, k, n - k + 1))


def class_probability_bounds(
    counts: Any, alpha: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Top class and simultaneous bounds p1, p2 from vote counts.

  Bonferroni correction over the K classes: each class k gets the two-sided
  Clopper-Pearson interval [lo_k, hi_k] at confidence 1 - alpha / K. By the
  union bound, P(some interval misses its p_k) <= K * alpha / K = alpha, so
  with probability >= 1 - alpha *all K intervals hold at once*. On that event

      p1 = lo_top <= P(vote = top)   and
      p2 = max_{k != top} hi_k >= max_{k != top} P(vote = k)

  hold together whichever class the same counts select as top
  (top = argmax_k counts_k, the first on ties). Correcting over all K classes
  (not only two) is what makes this data-dependent choice of top and
  runner-up safe; two-sided intervals are needed because each class may end
  up on either side.

  Args:
    counts: integer vote counts [..., K] (K >= 2), each row with the same
      positive total.
    alpha: total miscoverage of the joint statement, in (0, 1).

  Returns:
    (top, p1, p2): the top class (int64) and the two bounds (float64), each
    of shape counts.shape[:-1].

  Raises:
    ValueError: for bad counts or alpha.
  """
  alpha = _check_alpha(alpha)
  counts = np.asarray(counts)
  if counts.ndim < 1 or counts.shape[-1] < 2:
    raise ValueError(f"counts must have a last axis of K >= 2 classes, got "
                     f"shape {counts.shape}")
  trials = np.sum(counts, axis=-1, keepdims=True)
  num_classes = counts.shape[-1]
  lower, upper = clopper_pearson(counts, trials, alpha / num_classes)
  top = np.argmax(counts, axis=-1)
  p1 = np.take_along_axis(lower, top[..., None], axis=-1)[..., 0]
  others = upper.copy()
  np.put_along_axis(others, top[..., None], -np.inf, axis=-1)
  p2 = np.max(others, axis=-1)
  return top.astype(np.int64), p1, p2


def laplace_epsilon(kappa: Any, sensitivity: float,
                    scale: float) -> np.ndarray:
  """Pure-DP epsilon of Laplace noise Lap(scale) at attack size kappa.

  A change of the input of size kappa (in the attack's norm) moves the noised
  layer by at most kappa * Delta in L1, where Delta = `sensitivity` is its L1
  sensitivity per unit attack; the Laplace mechanism with scale b is then
  eps-DP with eps(kappa) = kappa * Delta / b (delta = 0).
  """
  kappa = _check_kappa(kappa)
  sensitivity = _validation.check_positive("sensitivity", sensitivity)
  scale = _validation.check_positive("scale", scale)
  return kappa * sensitivity / scale


def laplace_certified(p1: ArrayLike, p2: ArrayLike, kappa: ArrayLike,
                      sensitivity: float, scale: float) -> np.ndarray:
  """PixelDP certificate for Laplace noise at attack size kappa.

  With eps = kappa * Delta / b and delta = 0, (PixelDP) reads

      p1 > exp(2 kappa Delta / b) * p2,

  checked strictly; p1 <= p2 never certifies.

  Args:
    p1: lower bound(s) on the top class's vote probability, in [0, 1].
    p2: upper bound(s) on the runner-up's, in [0, 1].
    kappa: attack size(s) >= 0, broadcast against p1 and p2.
    sensitivity: L1 sensitivity Delta of the noised layer per unit attack
      (in the attack's norm), > 0.
    scale: Laplace scale b of the noise, > 0.

  Returns:
    A bool array of the broadcast shape.

  Raises:
    ValueError: for an argument out of range.
  """
  p1 = _check_probabilities("p1", p1)
  p2 = _check_probabilities("p2", p2)
  eps = laplace_epsilon(kappa, sensitivity, scale)
  return (p1 > np.exp(2 * eps) * p2) & (p1 > p2)


def laplace_radius(p1: ArrayLike, p2: ArrayLike, sensitivity: float,
                   scale: float) -> np.ndarray:
  """Largest attack size certified by `laplace_certified` (a supremum).

  Solving p1 > exp(2 kappa Delta / b) p2 for kappa:

      kappa < b * ln(p1 / p2) / (2 Delta),

  so the radius is b ln(p1 / p2) / (2 Delta) when p1 > p2 (infinite when
  p2 = 0 < p1) and 0 otherwise; a point is certified at kappa exactly when
  kappa < radius.

  Args:
    p1: lower bound(s) on the top class's vote probability, in [0, 1].
    p2: upper bound(s) on the runner-up's, in [0, 1].
    sensitivity: L1 sensitivity Delta per unit attack, > 0.
    scale: Laplace scale b, > 0.

  Returns:
    A float64 array of radii (>= 0, possibly inf) of the broadcast shape.
  """
  p1 = _check_probabilities("p1", p1)
  p2 = _check_probabilities("p2", p2)
  sensitivity = _validation.check_positive("sensitivity", sensitivity)
  scale = _validation.check_positive("scale", scale)
  p1, p2 = np.broadcast_arrays(p1, p2)
  with np.errstate(divide="ignore", invalid="ignore"):
    radius = scale * (np.log(p1) - np.log(p2)) / (2 * sensitivity)
  return np.where(p1 > p2, radius, 0.0)


def _check_gaussian(sensitivity: Any, sigma: Any,
                    delta: Any) -> Tuple[float, float, float]:
  return (_validation.check_positive("sensitivity", sensitivity),
          _validation.check_positive("sigma", sigma),
          _validation.check_open_unit_interval("delta", delta))


def gaussian_epsilon(kappa: Any, sensitivity: float, sigma: float,
                     delta: float) -> np.ndarray:
  """Epsilon of the classical Gaussian mechanism at attack size kappa.

  Dwork & Roth (Thm. A.1): N(0, sigma^2 I) on a layer of L2 sensitivity
  Delta_2 * kappa is (eps, delta)-DP for sigma = sqrt(2 ln(1.25 / delta))
  Delta_2 kappa / eps, i.e.

      eps(kappa) = sqrt(2 ln(1.25 / delta)) * Delta_2 * kappa / sigma,

  valid only while eps(kappa) <= 1 (callers must check).
  """
  kappa = _check_kappa(kappa)
  sensitivity, sigma, delta = _check_gaussian(sensitivity, sigma, delta)
  return math.sqrt(2 * math.log(1.25 / delta)) * sensitivity * kappa / sigma


def gaussian_certified(p1: ArrayLike, p2: ArrayLike, kappa: ArrayLike,
                       sensitivity: float, sigma: float,
                       delta: float) -> np.ndarray:
  """PixelDP certificate for Gaussian noise at attack size kappa.

  With eps = eps(kappa) of `gaussian_epsilon`, certified iff

      eps <= 1   and   p1 > exp(2 eps) p2 + (1 + exp(eps)) delta,

  strictly. Beyond eps = 1 the classical Gaussian mechanism bound says
  nothing, so such kappa are refused (not certified).

  Args:
    p1: lower bound(s) on the top class's vote probability, in [0, 1].
    p2: upper bound(s) on the runner-up's, in [0, 1].
    kappa: attack size(s) >= 0, broadcast against p1 and p2.
    sensitivity: L2 sensitivity Delta_2 of the noised layer per unit attack
      (in the attack's norm), > 0.
    sigma: standard deviation of the Gaussian noise, > 0.
    delta: the mechanism's delta, in (0, 1).

  Returns:
    A bool array of the broadcast shape.
  """
  p1 = _check_probabilities("p1", p1)
  p2 = _check_probabilities("p2", p2)
  eps = gaussian_epsilon(kappa, sensitivity, sigma, delta)
  bound = np.exp(2 * eps) * p2 + (1 + np.exp(eps)) * delta
  return (eps <= 1) & (p1 > bound) & (p1 > p2)


def gaussian_radius(p1: ArrayLike, p2: ArrayLike, sensitivity: float,
                    sigma: float, delta: float) -> np.ndarray:
  """Largest attack size certified by `gaussian_certified` (a supremum).

  With u = e^eps, (PixelDP) is the quadratic p2 u^2 + delta u + (delta - p1)
  < 0, i.e. u < u* with (rationalised, stable also for p2 = 0)

      u* = 2 (p1 - delta) / (delta + sqrt(delta^2 + 4 p2 (p1 - delta))),

  so eps < eps* = ln u*. Capped by the validity region eps <= 1 and mapped
  back through eps = c kappa, c = sqrt(2 ln(1.25 / delta)) Delta_2 / sigma:

      radius = min(eps*, 1) / c   (0 when eps* <= 0, i.e. p1 <= p2 + 2 delta).

  Args:
    p1: lower bound(s) on the top class's vote probability, in [0, 1].
    p2: upper bound(s) on the runner-up's, in [0, 1].
    sensitivity: L2 sensitivity Delta_2 per unit attack, > 0.
    sigma: Gaussian standard deviation, > 0.
    delta: the mechanism's delta, in (0, 1).

  Returns:
    A float64 array of radii >= 0 of the broadcast shape.
  """
  p1 = _check_probabilities("p1", p1)
  p2 = _check_probabilities("p2", p2)
  sensitivity, sigma, delta = _check_gaussian(sensitivity, sigma, delta)
  p1, p2 = np.broadcast_arrays(p1, p2)
  c = math.sqrt(2 * math.log(1.25 / delta)) * sensitivity / sigma
  margin = np.maximum(p1 - delta, 0.0)
  u_star = 2 * margin / (delta + np.sqrt(delta**2 + 4 * p2 * margin))
  with np.errstate(divide="ignore"):
    eps_star = np.log(u_star)
  return np.where((eps_star > 0) & (p1 > p2),
                  np.minimum(eps_star, 1.0) / c, 0.0)


def certified_accuracy(correct: Any, radii: Any, kappas: Any) -> np.ndarray:
  """Fraction of points that are correct and certified at each kappa.

      certified_accuracy[j] = mean_i [correct_i and radii_i > kappas_j].

  Abstentions should carry radius 0 (or any radius <= 0, or NaN) and so never
  count as certified.

  Args:
    correct: booleans [N], whether each (non-abstained) prediction is right.
    radii: certified radii [N].
    kappas: attack sizes [M] (or a scalar), each >= 0.

  Returns:
    A float64 array [M] (a 0-d array for a scalar kappa).

  Raises:
    ValueError: for mismatched lengths, empty input or a negative kappa.
  """
  correct = np.asarray(correct, dtype=bool)
  radii = np.asarray(radii, dtype=np.float64)
  kappas = _check_kappa(kappas)
  if correct.ndim != 1 or correct.shape != radii.shape or len(correct) == 0:
    raise ValueError(f"correct and radii must be non-empty vectors of one "
                     f"length, got shapes {correct.shape} and {radii.shape}")
  certified = correct[:, None] & (radii[:, None] > kappas.reshape(-1)[None])
  return np.mean(certified, axis=0).reshape(kappas.shape)
