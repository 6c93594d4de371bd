"""Black-box audit in one training run, with input-space canaries.

Threat model: the auditor inserts m canaries (e.g. mislabeled examples,
`canaries.mislabeled_canaries`), each independently with probability 1/2,
and sees only the final model. A canary the model fits has a low loss, so
by default the score is minus its loss (`classifier_scores`); for a GAN it
can be the discriminator's "real" logit (LOGAN). The auditor guesses "in"
for the highest scores and "out" for the lowest, and
`bounds.one_run_epsilon_lower_bound` turns the guesses into an epsilon
bound (Steinke, Nasr and Jagielski 2023).
Weaker than the white-box audit: it measures what an attacker of the
released model gets, not the worst case of the mechanism.

Example:
  >>> result = one_run_audit(train_fn, x, y, canary_x, canary_y,
  ...                        delta=1e-5, seed=0)
  >>> result.bound.epsilon
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from tfdp.audit import bounds
from tfdp.audit import membership


@dataclasses.dataclass(frozen=True)
class BlackBoxResult:
  """The bound, the canaries' scores and which were included."""
  bound: bounds.AuditBound
  scores: np.ndarray
  included: np.ndarray


def classifier_scores(model: tf.keras.Model, x: np.ndarray,
                      y: np.ndarray) -> np.ndarray:
  """Minus each example's loss under a classifier that returns logits."""
  logits = model.predict(x, batch_size=512, verbose=0)
  return -membership.per_example_loss(logits, np.asarray(y))


def one_run_audit(train_fn: Callable[[np.ndarray, np.ndarray], Any],
                  x: np.ndarray, y: np.ndarray, canary_x: np.ndarray,
                  canary_y: np.ndarray, *, delta: float,
                  confidence: float = 0.95,
                  seed: Optional[int] = None,
                  score_fn: Callable[[Any, np.ndarray, np.ndarray],
                                     np.ndarray] = classifier_scores
                  ) -> BlackBoxResult:
  """Trains once on (x, y) plus a random half of the canaries; bounds eps.

  Args:
    train_fn: trains and returns what is released (a classifier by
      default), as the trainer under audit does (with its privacy claim).
    x, y: the training examples.
    canary_x, canary_y: the m canaries (m >= 2).
    delta, confidence: as for `bounds.one_run_epsilon_lower_bound`.
    seed: draws which canaries are included.
    score_fn: (released, canary_x, canary_y) -> one score per canary,
      larger meaning "looks included".

  Returns:
    A `BlackBoxResult`.
  """
  if len(canary_x) < 2 or len(canary_x) != len(canary_y):
    raise ValueError("canary_x and canary_y need the same number (>= 2) of "
                     f"rows, got {len(canary_x)} and {len(canary_y)}")
  rng = np.random.default_rng(seed)
  included = rng.random(len(canary_x)) < 0.5
  order = rng.permutation(len(x) + int(included.sum()))
  train_x = np.concatenate([x, canary_x[included]])[order]
  train_y = np.concatenate([y, canary_y[included]])[order]
  scores = np.asarray(score_fn(train_fn(train_x, train_y), canary_x,
                               canary_y), dtype=np.float64)
  bound = bounds.one_run_epsilon_lower_bound(scores, included, delta=delta,
                                             confidence=confidence)
  return BlackBoxResult(bound, scores, included)
