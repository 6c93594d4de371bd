"""Empirical epsilon lower bounds from the outcomes of a distinguishing test.

A mechanism M is (epsilon, delta)-DP if for neighbouring datasets D, D' (one
canary in or out) and every set S of outputs,
P[M(D) in S] <= e^epsilon P[M(D') in S] + delta, both ways round. An
auditor who guesses "in" on S has true positive rate TPR = P[M(D) in S] and
false positive rate FPR = P[M(D') in S], hence (S and its complement)

    epsilon >= log((TPR - delta) / FPR)            and
    epsilon >= log((1 - FPR - delta) / (1 - TPR)).

From counts, Clopper-Pearson bounds TPR from below and FPR from above (and
the reverse for the second form), each at confidence 1 - alpha/2, so the
bound holds with probability at least 1 - alpha (`epsilon_lower_bound`).
A threshold on attack scores chosen on the same runs that then count would
bias the bound up; `epsilon_lower_bound_from_scores` chooses it on a
separate part of the runs.

One training run with m canaries, each included independently with
probability 1/2 (Steinke, Nasr and Jagielski 2023, "Privacy auditing with
one (1) training run"): an auditor makes r guesses and gets v right. Under
(epsilon, 0)-DP, v is dominated by Binomial(r, p), p = e^eps / (1 + e^eps);
with delta > 0,

    P[V >= v] <= P[Bin(r, p) >= v]
                 + 2 m delta max_{i=1..v} P[v - i <= Bin(r, p) < v] / i,

and the bound is the largest epsilon whose p-value stays below alpha
(`one_run_epsilon_lower_bound`).

Example:
  >>> epsilon_lower_bound(true_positives=480, positives=500,
  ...                     false_positives=5, negatives=500, delta=1e-5)
  3.70...
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np
from scipy import stats


def _check_confidence(confidence: float) -> float:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
  return float(confidence)


def _check_delta(delta: float) -> float:
  if not 0.0 <= delta < 1.0:
    raise ValueError(f"delta must be in [0, 1), got {delta!r}")
  return float(delta)


def _check_count(name: str, successes: int, trials_name: str,
                 trials: int) -> None:
  if trials < 1:
    raise ValueError(f"{trials_name} must be >= 1, got {trials!r}")
  if not 0 <= successes <= trials:
    raise ValueError(f"{name} must be in [0, {trials_name}] = [0, {trials}], "
                     f"got {successes!r}")


def clopper_pearson_lower(successes: int, trials: int,
                          confidence: float) -> float:
  """One-sided lower Clopper-Pearson bound on a binomial proportion.

  The largest p with P[Bin(trials, p) >= successes] <= 1 - confidence:
  the (1 - confidence) quantile of Beta(successes, trials - successes + 1);
  0 for no successes.
  """
  if successes == 0:
    return 0.0
  return float(stats.beta.ppf(1.0 - confidence, successes,
                              trials - successes + 1))


def clopper_pearson_upper(successes: int, trials: int,
                          confidence: float) -> float:
  """One-sided upper Clopper-Pearson bound: 1 - lower bound of failures."""
  return 1.0 - clopper_pearson_lower(trials - successes, trials, confidence)


def _log_ratio(numerator: float, denominator: float) -> float:
  if numerator <= 0.0:
    return 0.0
  if denominator <= 0.0:
    return float("inf")
  return max(0.0, float(np.log(numerator / denominator)))


def epsilon_lower_bound(true_positives: int, positives: int,
                        false_positives: int, negatives: int, *,
                        delta: float, confidence: float = 0.95) -> float:
  """Epsilon that (epsilon, delta)-DP must exceed to explain the counts.

  Args:
    true_positives: runs with the canary in that the test called "in".
    positives: runs with the canary in, >= 1.
    false_positives: runs with the canary out that the test called "in".
    negatives: runs with the canary out, >= 1.
    delta: the delta of the claim, in [0, 1).
    confidence: the probability that the bound holds, in (0, 1).

  Returns:
    max(log((TPR_lo - delta) / FPR_hi), log((1 - FPR_hi - delta) /
    (1 - TPR_lo)), 0), with the one-sided Clopper-Pearson bounds TPR_lo and
    FPR_hi at confidence 1 - (1 - confidence) / 2 each. Finite: a finite
    sample never rules out an FPR of a little above 0.
  """
  _check_count("true_positives", true_positives, "positives", positives)
  _check_count("false_positives", false_positives, "negatives", negatives)
  delta = _check_delta(delta)
  each = 1.0 - (1.0 - _check_confidence(confidence)) / 2.0
  tpr_lo = clopper_pearson_lower(true_positives, positives, each)
  fpr_hi = clopper_pearson_upper(false_positives, negatives, each)
  return max(_log_ratio(tpr_lo - delta, fpr_hi),
             _log_ratio(1.0 - fpr_hi - delta, 1.0 - tpr_lo))


@dataclasses.dataclass(frozen=True)
class AuditBound:
  """An epsilon lower bound and the counts it came from.

  Attributes:
    epsilon: the lower bound (holds with probability `confidence`).
    confidence: the probability that it holds.
    threshold: the score at or above which the test says "in" (None for the
      one-run audit, which guesses by rank).
    true_positives, positives, false_positives, negatives: the counts of the
      evaluation part (runs, or for one run: correct guesses as true
      positives out of the guesses as positives; negatives 0).
  """
  epsilon: float
  confidence: float
  threshold: Optional[float]
  true_positives: int
  positives: int
  false_positives: int
  negatives: int


def _counts_at(threshold: float, scores_in: np.ndarray,
               scores_out: np.ndarray):
  return (int(np.sum(scores_in >= threshold)), len(scores_in),
          int(np.sum(scores_out >= threshold)), len(scores_out))


def _best_threshold(scores_in: np.ndarray, scores_out: np.ndarray,
                    delta: float, confidence: float) -> float:
  """The threshold whose bound on these scores is largest."""
  candidates = np.unique(np.concatenate([scores_in, scores_out]))
  bounds = [epsilon_lower_bound(*_counts_at(t, scores_in, scores_out),
                                delta=delta, confidence=confidence)
            for t in candidates]
  return float(candidates[int(np.argmax(bounds))])


def epsilon_lower_bound_from_scores(
    scores_in: Sequence[float], scores_out: Sequence[float], *,
    delta: float, confidence: float = 0.95,
    selection_fraction: float = 0.5,
    seed: Optional[int] = 0) -> AuditBound:
  """The bound of a threshold test on attack scores, threshold held out.

  A run's score is larger when the canary looks included. The runs are
  shuffled and split: the threshold that maximises the bound on the first
  `selection_fraction` of each group is then counted on the rest only, so
  choosing it does not inflate the bound.

  Args:
    scores_in: one score per run with the canary in (at least 2).
    scores_out: one score per run with the canary out (at least 2).
    delta: the delta of the claim, in [0, 1).
    confidence: the probability that the bound holds, in (0, 1).
    selection_fraction: the share of runs used to choose the threshold, in
      (0, 1).
    seed: the shuffle's seed (None: a fresh one).

  Returns:
    An `AuditBound` with the evaluation part's counts.
  """
  if not 0.0 < selection_fraction < 1.0:
    raise ValueError("selection_fraction must be in (0, 1), got "
                     f"{selection_fraction!r}")
  delta = _check_delta(delta)
  confidence = _check_confidence(confidence)
  rng = np.random.default_rng(seed)
  parts = []
  for name, scores in (("scores_in", scores_in), ("scores_out", scores_out)):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size < 2 or not np.all(np.isfinite(scores)):
      raise ValueError(f"{name} needs at least 2 finite scores (one per "
                       f"run), got {scores.size} with "
                       f"{int(np.sum(~np.isfinite(scores)))} not finite")
    scores = rng.permutation(scores)
    cut = min(max(int(round(selection_fraction * scores.size)), 1),
              scores.size - 1)
    parts.append((scores[:cut], scores[cut:]))
  (select_in, count_in), (select_out, count_out) = parts
  threshold = _best_threshold(select_in, select_out, delta, confidence)
  counts = _counts_at(threshold, count_in, count_out)
  return AuditBound(
      epsilon_lower_bound(*counts, delta=delta, confidence=confidence),
      confidence, threshold, *counts)


def one_run_p_value(canaries: int, guesses: int, correct: int,
                    epsilon: float, delta: float) -> float:
  """P[at least `correct` right of `guesses`] under (epsilon, delta)-DP.

  The bound of the module docstring, for `canaries` canaries each included
  with probability 1/2.
  """
  if not 0 <= correct <= guesses <= canaries:
    raise ValueError("need 0 <= correct <= guesses <= canaries, got "
                     f"{correct}, {guesses}, {canaries}")
  p = 1.0 / (1.0 + np.exp(-epsilon))
  tail = stats.binom.sf(correct - 1, guesses, p)
  # P[v - i <= Bin < v] / i for i = 1..v: cumulative sums of the pmf below v.
  below = np.cumsum(stats.binom.pmf(np.arange(correct - 1, -1, -1),
                                    guesses, p))
  spread = float(np.max(below / np.arange(1, correct + 1))) if correct else 0.
  return float(min(1.0, tail + 2.0 * canaries * delta * spread))


def _one_run_epsilon(canaries: int, guesses: int, correct: int, delta: float,
                     alpha: float, epsilon_max: float = 20.0) -> float:
  """The largest epsilon whose p-value is below alpha (bisection)."""
  if one_run_p_value(canaries, guesses, correct, 0.0, delta) >= alpha:
    return 0.0
  low, high = 0.0, epsilon_max
  while high - low > 1e-4:
    middle = (low + high) / 2
    if one_run_p_value(canaries, guesses, correct, middle, delta) < alpha:
      low = middle
    else:
      high = middle
  return low


def one_run_epsilon_lower_bound(
    scores: Sequence[float], included: Sequence[bool], *, delta: float,
    confidence: float = 0.95,
    guess_counts: Optional[Sequence[int]] = None) -> AuditBound:
  """The one-run audit: guess "in" for the top-scoring canaries.

  For each k in `guess_counts`, the auditor guesses "in" for the k canaries
  with the largest scores and "out" for the k with the smallest, and
  abstains on the rest. The best k is taken with a Bonferroni correction
  (each k tested at alpha / len(guess_counts)), so the result holds with
  probability `confidence`.

  Args:
    scores: one score per canary, larger meaning "looks included".
    included: whether each canary was in the training set (each with
      probability 1/2, independently).
    delta: the delta of the claim.
    confidence: the probability that the bound holds.
    guess_counts: the k to try; default: 10 values log-spaced from m / 100
      to m / 2.

  Returns:
    An `AuditBound` (true_positives: correct guesses; positives: guesses).
  """
  delta = _check_delta(delta)
  alpha = 1.0 - _check_confidence(confidence)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  included = np.asarray(included, dtype=bool).reshape(-1)
  if scores.size < 2 or scores.size != included.size:
    raise ValueError("scores and included need one entry per canary (at "
                     f"least 2), got {scores.size} and {included.size}")
  canaries = scores.size
  if guess_counts is None:
    guess_counts = np.unique(np.geomspace(
        max(1, canaries // 100), canaries // 2, 10).astype(int))
  guess_counts = [int(k) for k in guess_counts]
  if not guess_counts or min(guess_counts) < 1 or (
      max(guess_counts) * 2 > canaries):
    raise ValueError("guess_counts must be in [1, canaries / 2] = [1, "
                     f"{canaries // 2}], got {guess_counts!r}")
  order = np.argsort(scores, kind="stable")
  best = None
  for k in guess_counts:
    correct = int(np.sum(included[order[-k:]]) +
                  np.sum(~included[order[:k]]))
    epsilon = _one_run_epsilon(canaries, 2 * k, correct, delta,
                               alpha / len(guess_counts))
    if best is None or epsilon > best.epsilon:
      best = AuditBound(epsilon, 1.0 - alpha, None, correct, 2 * k, 0, 0)
  return best


def simulated_threshold(scores_in: Sequence[float],
                        scores_out: Sequence[float], *, runs_in: int,
                        runs_out: int, delta: float,
                        confidence: float = 0.95) -> float:
  """The threshold to fix before an audit, from simulated scores.

  An auditor who knows the claimed mechanism can simulate its attack scores
  (e.g. `tfdp.audit.whitebox.simulate_scores`) and fix the threshold whose
  expected bound, with the planned numbers of runs, is largest. Fixed in
  advance, it costs no runs (unlike a split); if the implementation is not
  the claimed mechanism the threshold may be a poor one, but the bound
  stays valid.

  Args:
    scores_in, scores_out: simulated scores with the canary in and out.
    runs_in, runs_out: the numbers of real runs that will be counted.
    delta, confidence: as for `epsilon_lower_bound`.

  Returns:
    The threshold (a test says "in" at or above it).
  """
  scores_in = np.sort(np.asarray(scores_in, dtype=np.float64))
  scores_out = np.sort(np.asarray(scores_out, dtype=np.float64))
  candidates = np.quantile(np.concatenate([scores_in, scores_out]),
                           np.linspace(0.0, 1.0, 401))
  best, best_bound = float(candidates[0]), -1.0
  for threshold in candidates:
    tpr = 1.0 - np.searchsorted(scores_in, threshold) / scores_in.size
    fpr = 1.0 - np.searchsorted(scores_out, threshold) / scores_out.size
    bound = epsilon_lower_bound(
        int(round(tpr * runs_in)), runs_in, int(round(fpr * runs_out)),
        runs_out, delta=delta, confidence=confidence)
    if bound > best_bound:
      best, best_bound = float(threshold), bound
  return best
