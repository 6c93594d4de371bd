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

`evaluate` measures a trained base classifier as a smoothed one: accuracy,
certified accuracy at several radii, accuracy under L2 PGD, and an empirical
soundness check of the certificates. `SoftSmoothed` is a differentiable
stand-in for g that attacks can follow.
"""

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.robust import adversarial
from tfdp.robust import certification
from tfdp.robust import evaluation as evaluation_lib

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


def _check_certify(sigma, n0, n, alpha, num_classes, batch_size):
  sigma, alpha, num_classes, batch_size = _check_common(
      sigma, alpha, num_classes, batch_size)
  return (sigma, _validation.check_positive_int("n0", n0),
          _validation.check_positive_int("n", n), alpha, num_classes,
          batch_size)


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
  sigma, n0, n, alpha, num_classes, batch_size = _check_certify(
      sigma, n0, n, alpha, num_classes, batch_size)
  noised = _Noised(predict_fn, sigma, np.random.default_rng(seed))
  counts0 = certification.sample_votes(noised, x, n0, num_classes,
                                       batch_size=batch_size)
  counts = certification.sample_votes(noised, x, n, num_classes,
                                      batch_size=batch_size)
  return _certify_counts(counts0, counts, sigma, alpha)


def radius(p1: Any, p2: Any, sigma: float) -> np.ndarray:
  """Cohen et al.'s certified L2 radius of the smoothed classifier.

  With p1 a lower bound on the top class's probability under N(0, sigma^2 I)
  input noise and p2 an upper bound on every other class's (Theorem 1 of
  Cohen, Rosenfeld and Kolter 2019), g is constant on the L2 ball of radius

      R = sigma / 2 (Phi^-1(p1) - Phi^-1(p2)),     0 where p1 <= p2;

  with p2 = 1 - p1 (CERTIFY's choice) this is sigma Phi^-1(p1).

  Args:
    p1: lower bound(s) on the top class's probability, in [0, 1].
    p2: upper bound(s) on the runner-up's, in [0, 1].
    sigma: noise standard deviation, > 0, in input units.

  Returns:
    A float64 array of radii >= 0 of the broadcast shape.

  Raises:
    ValueError: for a sigma <= 0 or probabilities outside [0, 1].
  """
  # pylint: disable=g-import-not-at-top
  from scipy import stats
  # pylint: enable=g-import-not-at-top
  sigma = _validation.check_positive("sigma", sigma)
  p1 = np.asarray(p1, np.float64)
  p2 = np.asarray(p2, np.float64)
  for name, p in (("p1", p1), ("p2", p2)):
    if not np.all((p >= 0) & (p <= 1)):
      raise ValueError(f"{name} must be probabilities in [0, 1], got {p}")
  with np.errstate(divide="ignore", invalid="ignore"):
    r = 0.5 * sigma * (stats.norm.ppf(p1) - stats.norm.ppf(p2))
  return np.where(p1 > p2, r, 0.0)


def _certify_counts(counts0: np.ndarray, counts: np.ndarray, sigma: float,
                    alpha: float) -> Tuple[np.ndarray, np.ndarray]:
  """CERTIFY's decision from the selection and estimation vote counts."""
  top = np.argmax(counts0, axis=-1)
  n_a = np.take_along_axis(counts, top[:, None], axis=-1)[:, 0]
  p_a = certification.clopper_pearson_lower(n_a, counts.sum(axis=-1), alpha)
  certified = p_a >= 0.5
  prediction = np.where(certified, top, ABSTAIN).astype(np.int64)
  return prediction, radius(p_a, 1 - p_a, sigma)


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
  return _predict_counts(counts, alpha)


def _predict_counts(counts: np.ndarray, alpha: float) -> np.ndarray:
  """PREDICT's decision from vote counts [N, K]."""
  order = np.argsort(-counts, axis=-1, kind="stable")
  top = order[:, 0]
  n_a = np.take_along_axis(counts, order[:, :1], axis=-1)[:, 0]
  n_b = np.take_along_axis(counts, order[:, 1:2], axis=-1)[:, 0]
  pvalue = binomial_test_pvalue(n_a, n_b)
  return np.where(pvalue <= alpha, top, ABSTAIN).astype(np.int64)


class SoftSmoothed:
  """x -> log mean_j softmax(f(x + e_j)), e_j ~ N(0, sigma^2 I), j <= samples.

  A differentiable surrogate of the smoothed classifier g for attacks: the
  log of a Monte Carlo estimate of the smoothed soft classifier, with fresh
  draws at every call, so that PGD follows an expectation over the noise
  (Salman et al. 2019's attack on smoothed classifiers). Its arg-max is a
  soft-vote estimate of g, not g itself; the evaluation judges attacks by
  g's votes. Callable like a Keras model, `fn(x, training=False)`.

  Args:
    model: the base classifier f (logits), run with `training=False`.
    sigma: noise standard deviation, > 0.
    samples: noise draws per input and call, an integer >= 1.
  """

  def __init__(self, model: Callable[..., tf.Tensor], sigma: float,
               samples: int):
    self._model = model
    self._sigma = _validation.check_positive("sigma", sigma)
    self._samples = _validation.check_positive_int("samples", samples)

  def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    del training  # Always inference mode.
    x = tf.convert_to_tensor(x)
    tiled = tf.repeat(x, self._samples, axis=0)
    noisy = tiled + tf.random.normal(tf.shape(tiled), stddev=self._sigma,
                                     dtype=x.dtype)
    probabilities = tf.nn.softmax(
        tf.cast(self._model(noisy, training=False), tf.float32))
    probabilities = tf.reshape(
        probabilities, [tf.shape(x)[0], self._samples, -1])
    return tf.math.log(tf.reduce_mean(probabilities, axis=1) + 1e-12)


def _per_batch(fn: Callable[..., tf.Tensor], *arrays: np.ndarray,
               batch_size: int) -> np.ndarray:
  """A traced fn over consecutive batches of the arrays, concatenated."""
  return np.concatenate([
      fn(*(tf.constant(a[start:start + batch_size]) for a in arrays)).numpy()
      for start in range(0, len(arrays[0]), batch_size)])


def evaluate(model: tf.keras.Model,
             x: Any,
             y: Any,
             *,
             sigma: float,
             radii: Sequence[float],
             num_classes: int,
             n0: int = 100,
             n: int = 1000,
             alpha: float = 0.001,
             attack_steps: int = 20,
             attack_noise_samples: int = 0,
             attack_votes: Optional[int] = None,
             clip_min: Optional[float] = 0.0,
             clip_max: Optional[float] = 1.0,
             batch_size: int = 1000,
             attack_batch_size: int = 250,
             seed: Optional[int] = None) -> Dict[str, Any]:
  """Evaluates the smoothed classifier of `model`: accuracy, certificates, PGD.

  With f = `model` (logits, inference mode) and g its smoothed classifier
  at noise sigma:

  * ``base_accuracy``: f on the clean inputs, no noise.
  * ``accuracy``: g by PREDICT on the n estimation votes, an abstention
    counting as wrong (``abstained``: their fraction).
  * ``certified_accuracy[r]``: CERTIFY's class is the label and its radius
    R > r (L2, input units), for each r in `radii`;
    ``average_certified_radius``: mean of R over points, 0 where wrong or
    abstained (Zhai et al. 2020).
  * ``pgd[r]``: each point attacked by cleverhans' L2 PGD of radius r
    (`attack_steps` steps of 2.5 r / steps, random start, within
    [clip_min, clip_max]), crafted against f (`attack_noise_samples` = 0) or
    against `SoftSmoothed(f, sigma, attack_noise_samples)`, maximising the
    loss of the certified class where there is one (the label otherwise).
    ``accuracy``: g (PREDICT on `attack_votes` fresh votes) right on the
    point and on its attack; ``base_accuracy``: the same for f; the
    soundness check ``certified`` (points with R > r) and ``flipped`` (those
    whose attack's top vote is not the certified class). A sound
    certificate flips none, up to its failure probability alpha and the
    Monte Carlo error of the attacked vote; PGD on f or on a surrogate is a
    heuristic check, not a proof.

  Args:
    model: the base classifier (logits), e.g. trained with
      `tfdp.robust.GaussianAugmentation(sigma)`.
    x: inputs [N, ...], floating point.
    y: integer labels [N].
    sigma: smoothing noise standard deviation, > 0, in input units.
    radii: L2 radii for certified accuracy and the attacks, each > 0.
    num_classes: number of classes, an integer >= 2.
    n0: votes to select CERTIFY's class, an integer >= 1.
    n: votes to bound pA and for PREDICT, an integer >= 1.
    alpha: failure probability of CERTIFY and PREDICT, in (0, 1).
    attack_steps: PGD iterations, an integer >= 1.
    attack_noise_samples: 0 to attack f; k >= 1 to attack the soft smoothed
      surrogate with k noise draws per step.
    attack_votes: votes at each attacked point; default n.
    clip_min: lowest valid input (attacks stay above it), or None.
    clip_max: highest valid input, or None.
    batch_size: rows per forward pass when voting, an integer >= 1.
    attack_batch_size: points attacked at once, an integer >= 1.
    seed: seed of the numpy voting noise, or None; seed the attacks' random
      starts and surrogate draws with `tf.random.set_seed`.

  Returns:
    A JSON-ready dict of the quantities above and the settings; radii are
    keyed by ``f"{r:g}"``.

  Raises:
    ValueError: for an argument out of range.
  """
  sigma, n0, n, alpha, num_classes, batch_size = _check_certify(
      sigma, n0, n, alpha, num_classes, batch_size)
  attack_votes = _validation.check_positive_int(
      "attack_votes", n if attack_votes is None else attack_votes)
  attack_batch_size = _validation.check_positive_int("attack_batch_size",
                                                     attack_batch_size)
  radii = [_validation.check_positive("radii", r) for r in radii]
  x = _validation.check_float_batch("x", x)
  y = adversarial.sparse_labels(np.asarray(y)).numpy()
  if len(x) == 0 or len(x) != len(y):
    raise ValueError(f"x and y must be non-empty and of one length, got "
                     f"{len(x)} and {len(y)}")
  target = model
  if _validation.check_non_negative_int("attack_noise_samples",
                                        attack_noise_samples):
    target = SoftSmoothed(model, sigma, attack_noise_samples)

  base = tf.function(adversarial.inference_fn(model), input_signature=[
      tf.TensorSpec([None] + list(x.shape[1:]), tf.float32)])
  noised = _Noised(base, sigma, np.random.default_rng(seed))

  def votes(points, count):
    return certification.sample_votes(noised, points, count, num_classes,
                                      batch_size=batch_size)

  def base_correct(points):
    logits = _per_batch(base, points, batch_size=batch_size)
    return np.argmax(logits, axis=-1) == y

  counts = votes(x, n)
  prediction, certified_radius = _certify_counts(votes(x, n0), counts,
                                                 sigma, alpha)
  smoothed = _predict_counts(counts, alpha)
  correct = smoothed == y
  clean_base = base_correct(x)
  certified_right = prediction == y
  labels = np.where(prediction == ABSTAIN, y, prediction)
  pgd = {}
  for r in radii:
    attack = adversarial.AdversarialTraining(
        epsilon=r, norm="2", steps=attack_steps, clip_min=clip_min,
        clip_max=clip_max)
    # pylint: disable=protected-access
    craft = evaluation_lib._traced(
        lambda xb, yb, a=attack: a.attack(target, xb, yb), x)
    # pylint: enable=protected-access
    x_adv = _per_batch(craft, x, labels, batch_size=attack_batch_size)
    adv_counts = votes(x_adv, attack_votes)
    certified = certified_radius > r
    pgd[f"{r:g}"] = {
        "accuracy": float(np.mean(
            correct & (_predict_counts(adv_counts, alpha) == y))),
        "base_accuracy": float(np.mean(clean_base & base_correct(x_adv))),
        "certified": int(np.sum(certified)),
        "flipped": int(np.sum(
            certified & (np.argmax(adv_counts, axis=-1) != prediction))),
    }
  return {
      "examples": int(len(x)),
      "sigma": sigma, "n0": n0, "n": n, "alpha": alpha,
      "attack_steps": int(attack_steps),
      "attack_noise_samples": int(attack_noise_samples),
      "attack_votes": attack_votes,
      "base_accuracy": float(np.mean(clean_base)),
      "accuracy": float(np.mean(correct)),
      "abstained": float(np.mean(smoothed == ABSTAIN)),
      "certified_accuracy": {
          f"{r:g}": float(a) for r, a in zip(
              radii, certification.certified_accuracy(
                  certified_right, certified_radius, radii))},
      "average_certified_radius": float(np.mean(
          np.where(certified_right, certified_radius, 0.0))),
      "pgd": pgd,
  }
