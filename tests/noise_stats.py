"""Measuring the DP noise a training step actually applies.

With a loss whose gradient is exactly zero, every clipped sum is zero, so one
step of SGD (learning rate lr, no momentum) moves each weight by exactly
-lr * n_j / B, where n ~ N(0, (sigma C)^2 I) is the noise the step added
and B the expected batch size: the weight change's standard deviation is
lr * sigma * C / B. Noise added twice gives sqrt(2) times that, none gives 0.

The sample standard deviation s of d independent normal coordinates with
standard deviation s0 is approximately normal with mean s0 and standard
error s0 / sqrt(2 (d - 1)); `assert_noise_std` allows Z such errors, a
two-sided false-failure probability of 2 (1 - Phi(Z)) < 1e-7 per check, and
with d >= 5,000 a tolerance under 8%, far from the 41% of doubled noise.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

# Statistical checks of noise that ignores every seed (it must be secret) are
# random: each allows Z standard errors, a two-sided false-failure
# probability 2 (1 - Phi(5.5)) = 3.8e-8, and a Kolmogorov-Smirnov p-value
# (uniform under the null) above KS_P_MIN, a false failure of 1e-7; a test
# with a few such checks fails falsely less than once in a million runs.
Z = 5.5
KS_P_MIN = 1e-7
MIN_COORDINATES = 5_000
SIGMA, CLIP, BATCH, LEARNING_RATE = 1.3, 0.7, 8, 2.0
EXPECTED_STD = LEARNING_RATE * SIGMA * CLIP / BATCH


class ZeroGradientLoss(tf.keras.losses.Loss):
  """One loss per example (no reduction) whose gradient is exactly zero."""

  def __init__(self):
    super().__init__(reduction=tf.keras.losses.Reduction.NONE)

  def call(self, y_true, y_pred):
    del y_true
    return 0.0 * tf.reduce_sum(
        tf.reshape(y_pred, [tf.shape(y_pred)[0], -1]), axis=1)


def weight_change(model: tf.keras.Model, x, y) -> np.ndarray:
  """All trainable coordinates' change over one fit step on (x, y)."""
  before = [v.numpy() for v in model.trainable_variables]
  model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
  return np.concatenate([(v.numpy() - b).ravel() for b, v in
                         zip(before, model.trainable_variables)])


def assert_noise_std(change: Sequence[float],
                     expected_std: float = EXPECTED_STD) -> None:
  """The change is N(0, expected_std^2) noise: its std and mean, to Z errors."""
  change = np.asarray(change, np.float64)
  d = change.size
  assert d >= MIN_COORDINATES, f"only {d} coordinates"
  std_error = expected_std / np.sqrt(2 * (d - 1))
  assert abs(change.std(ddof=1) - expected_std) < Z * std_error, (
      f"noise std {change.std(ddof=1):.5g}, expected {expected_std:.5g} "
      f"(+- {Z * std_error:.2g})")
  assert abs(change.mean()) < Z * expected_std / np.sqrt(d)


def assert_poisson_union(rows, size: int, batch: int) -> None:
  """Replicas' batches form, step by step, one Poisson sample of the set.

  Args:
    rows: [step][replica] the rows of replica g's batch (g in order over
      all replicas, e.g. worker 0's then worker 1's).
    size: N, the whole set.
    batch: the expected global batch N q.

  Replica g may hold only rows i with i mod R = g; the union's inclusion
  counts over T steps are then Binomial(T, q) per row, checked together by
  a chi-square test (p-value above KS_P_MIN) and in total to Z standard
  errors. Replicas that shared their uniforms (no per-replica seed) would
  pick matching rows (2k and 2k + 1 together): at most 1% of steps may
  show identical patterns on two replicas (chance: (q^2 + (1-q)^2)^(N/R)).
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  replicas, steps, q = len(rows[0]), len(rows), batch / size
  counts = np.zeros(size)
  identical = 0
  for step in rows:
    for owner, replica_rows in enumerate(step):
      assert all(row % replicas == owner for row in replica_rows), (
          f"replica {owner} holds rows of another replica: {replica_rows}")
      counts[replica_rows] += 1
    patterns = [tuple(row // replicas for row in r) for r in step]
    identical += len(set(patterns)) < len(patterns)
  assert counts.max() <= steps  # No row twice in one step.
  expected = steps * q
  chi_square = np.sum((counts - expected) ** 2) / (expected * (1 - q))
  assert stats.chi2.sf(chi_square, size - 1) > KS_P_MIN
  assert stats.chi2.cdf(chi_square, size - 1) > KS_P_MIN
  total_std = np.sqrt(size * steps * q * (1 - q))
  assert abs(counts.sum() - size * steps * q) < Z * total_std
  assert identical <= 0.01 * steps
