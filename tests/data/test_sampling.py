"""Tests for tfdp.data.sampling: statistical checks of the two DP samplers.

Examples are tagged with their index (y = arange(N)), so every batch tells
which examples it holds. Tolerances are 5 standard errors, derived from the
number of steps; all seeds are fixed.
"""

import math

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from tfdp.data import sampling
from tfdp import privacy
from tfdp.privacy.accounting import FIXED_SIZE, POISSON


def _tagged(n):
  """x: (n, 2) float32 with x[i] = (i, -i); y: int64 indices."""
  ids = np.arange(n)
  return np.stack([ids, -ids], axis=1).astype(np.float32), ids


def _epoch(sampled):
  """One iteration of the dataset: the list of index arrays, x checked."""
  batches = []
  for x, y in sampled.dataset.as_numpy_iterator():
    np.testing.assert_array_equal(x[:, 0], y)  # x and y rows stay paired.
    batches.append(y)
  return batches


def _assert_within(observed, mean, variance, num_samples):
  """|observed - mean| within 5 standard errors of a mean of num_samples."""
  assert abs(observed - mean) < 5 * math.sqrt(variance / num_samples), (
      observed, mean)


def _assert_independent_steps(batches, pair_overlap_mean, pair_overlap_var):
  """Overlap of disjoint pairs of batches (0,1), (2,3), ... has the right mean.

  A sampler that replays, or partitions the data, fails this.
  """
  overlaps = [len(np.intersect1d(a, b))
              for a, b in zip(batches[::2], batches[1::2])]
  _assert_within(np.mean(overlaps), pair_overlap_mean, pair_overlap_var,
                 len(overlaps))


# poisson_batches


@pytest.fixture(scope="module")
def poisson_epoch():
  n, b, steps = 1000, 50, 400
  x, y = _tagged(n)
  sampled = sampling.poisson_batches(x, y, b, steps_per_epoch=steps, seed=0)
  return sampled, _epoch(sampled)


def test_poisson_batch_sizes_are_binomial(poisson_epoch):
  sampled, batches = poisson_epoch
  n, q, steps = 1000, 0.05, 400
  assert len(batches) == steps
  sizes = np.array([len(batch) for batch in batches])
  variance = n * q * (1 - q)
  _assert_within(sizes.mean(), n * q, variance, steps)
  # Sample variance: standard error ~ variance * sqrt(2 / (steps - 1)).
  assert abs(sizes.var(ddof=1) - variance) < (
      5 * variance * math.sqrt(2 / (steps - 1)))
  assert sampled.sampling_probability == q


def test_poisson_inclusion_counts_are_binomial(poisson_epoch):
  _, batches = poisson_epoch
  n, q, steps = 1000, 0.05, 400
  counts = np.bincount(np.concatenate(batches), minlength=n)
  # Goodness of fit of the n independent counts to Binomial(steps, q), in
  # about ten bins of equal probability.
  binomial = stats.binom(steps, q)
  edges = np.unique(binomial.ppf(np.linspace(0, 1, 11)[1:-1]))
  cdf = np.concatenate([[0.0], binomial.cdf(edges), [1.0]])
  observed = np.bincount(np.searchsorted(edges, counts), minlength=len(cdf) - 1)
  assert stats.chisquare(observed, n * np.diff(cdf)).pvalue > 1e-3


def test_poisson_steps_are_independent(poisson_epoch):
  _, batches = poisson_epoch
  n, q = 1000, 0.05
  # Two independent batches share Binomial(n, q^2) examples.
  _assert_independent_steps(batches, n * q**2, n * q**2 * (1 - q**2))


def test_poisson_rows_are_distinct_examples(poisson_epoch):
  _, batches = poisson_epoch
  for batch in batches:
    assert len(np.unique(batch)) == len(batch)


def test_poisson_empty_batch_keeps_shapes_and_dtypes():
  n = 1000
  x = np.ones((n, 2, 3), np.uint8)
  y = np.eye(4, dtype=np.float32)[np.arange(n) % 4]  # One-hot targets.
  # q = 1 / 1000: P(empty batch) = (1 - q)^1000 ~ 0.37 per step.
  sampled = sampling.poisson_batches(x, y, 1, steps_per_epoch=30, seed=0)
  batches = list(sampled.dataset.as_numpy_iterator())
  empty = [(bx, by) for bx, by in batches if len(by) == 0]
  assert empty
  bx, by = empty[0]
  assert bx.shape == (0, 2, 3) and bx.dtype == np.uint8
  assert by.shape == (0, 4) and by.dtype == np.float32


def test_poisson_steps_per_epoch_and_accountant_kwargs():
  x, y = _tagged(1000)
  sampled = sampling.poisson_batches(x, y, 30, seed=0)
  assert sampled.steps_per_epoch == 33  # round(1000 / 30).
  assert int(sampled.dataset.cardinality()) == 33
  assert len(list(sampled.dataset)) == 33
  assert sampled.sampling == POISSON
  assert sampled.accountant_kwargs() == {
      "sampling": POISSON, "batch_size": 30, "dataset_size": 1000}


# fixed_size_batches


@pytest.fixture(scope="module")
def fixed_epoch():
  n, b, steps = 50, 10, 2000
  x, y = _tagged(n)
  sampled = sampling.fixed_size_batches(x, y, b, steps_per_epoch=steps,
                                        seed=0)
  return sampled, _epoch(sampled)


def test_fixed_size_batches_hold_exactly_b_distinct_examples(fixed_epoch):
  sampled, batches = fixed_epoch
  assert len(batches) == 2000
  for batch in batches:
    assert len(np.unique(batch)) == len(batch) == 10
  assert sampled.dataset.element_spec[1].shape == (10,)
  assert sampled.sampling == FIXED_SIZE
  assert sampled.accountant_kwargs() == {
      "sampling": FIXED_SIZE, "batch_size": 10, "dataset_size": 50}


def test_fixed_size_inclusion_is_uniform(fixed_epoch):
  _, batches = fixed_epoch
  n, b, steps = 50, 10, 2000
  p = b / n
  counts = np.bincount(np.concatenate(batches), minlength=n)
  expected = steps * p
  # Counts have covariance steps p (1 - p) n / (n - 1) (I - J / n), so the
  # Pearson statistic divided by (1 - p) n / (n - 1) is ~ chi2(n - 1).
  # Two-sided: shuffle-and-partition gives exactly equal counts (statistic 0).
  pearson = np.sum((counts - expected)**2 / expected)
  statistic = pearson / ((1 - p) * n / (n - 1))
  cdf = stats.chi2(n - 1).cdf(statistic)
  assert 1e-3 < cdf < 1 - 1e-3


def test_fixed_size_steps_are_independent(fixed_epoch):
  _, batches = fixed_epoch
  n, b = 50, 10
  # Two independent b-subsets share a Hypergeometric(n, b, b) count.
  mean = b * b / n
  variance = b * (b / n) * ((n - b) / n) * ((n - b) / (n - 1))
  _assert_independent_steps(batches, mean, variance)


# Both samplers


@pytest.mark.parametrize("sampler", [sampling.poisson_batches,
                                     sampling.fixed_size_batches])
def test_epochs_differ_and_seed_reproduces(sampler):
  x, y = _tagged(100)
  sampled = sampler(x, y, 10, steps_per_epoch=3, seed=7)
  first, second = _epoch(sampled), _epoch(sampled)
  assert not all(np.array_equal(a, b) for a, b in zip(first, second))
  assert not np.array_equal(first[0], first[1])
  replay = _epoch(sampler(x, y, 10, steps_per_epoch=3, seed=7))
  assert all(np.array_equal(a, b) for a, b in zip(first, replay))
  other = _epoch(sampler(x, y, 10, steps_per_epoch=3, seed=8))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


class _BatchRecorder(tf.keras.Model):
  """Trains nothing; reports a fingerprint of the last batch of each epoch."""

  def train_step(self, data):
    _, y = data
    fingerprint = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
    return {"fingerprint": fingerprint, "size": tf.size(y)}


@pytest.mark.parametrize("sampler", [sampling.poisson_batches,
                                     sampling.fixed_size_batches])
def test_keras_epochs_draw_fresh_batches(sampler):
  x, y = _tagged(200)
  sampled = sampler(x, y, 20, steps_per_epoch=2, seed=0)
  model = _BatchRecorder()
  model.compile()
  history = model.fit(sampled.dataset, epochs=4, verbose=0)
  assert len(set(history.history["fingerprint"])) == 4


@pytest.mark.parametrize("sampler", [sampling.poisson_batches,
                                     sampling.fixed_size_batches])
def test_accountant_accepts_accountant_kwargs(sampler):
  x, y = _tagged(1000)
  sampled = sampler(x, y, 50, seed=0)
  kwargs = sampled.accountant_kwargs()
  spent = privacy.compute_epsilon(1.0, sampled.steps_per_epoch, 1e-5, **kwargs)
  assert 0 < spent.epsilon < math.inf
  accountant = privacy.PrivacyAccountant(1.0, 1e-5, **kwargs)
  assert accountant.sampling == sampled.sampling
  assert accountant.sampling_probability == sampled.sampling_probability


_X, _Y = _tagged(10)


@pytest.mark.parametrize("sampler, name", [
    (sampling.poisson_batches, "expected_batch_size"),
    (sampling.fixed_size_batches, "batch_size"),
])
@pytest.mark.parametrize("args, kwargs, match", [
    ((_X[:0], _Y[:0], 1), {}, "x must hold at least one example.*dataset is "
     "empty"),
    ((_X, _Y[:9], 1), {}, "same length, got 10 and 9"),
    ((_X, _Y, 11), {}, "{name} must be <= .* larger than the dataset"),
    ((_X, _Y, 0), {}, "{name} must be an integer >= 1"),
    ((_X, _Y, 2.5), {}, "{name} must be an integer >= 1"),
    ((_X, _Y, 2), {"steps_per_epoch": 0}, "steps_per_epoch must be"),
    ((_X, _Y, 2), {"seed": -3}, "seed must be"),
])
def test_errors(sampler, name, args, kwargs, match):
  with pytest.raises(ValueError, match=match.format(name=name)):
    sampler(*args, **kwargs)


def _with_non_finite(array, rows, value=np.nan):
  array = array.copy()
  array[rows] = value
  return array


@pytest.mark.parametrize("sampler", [sampling.poisson_batches,
                                     sampling.fixed_size_batches])
@pytest.mark.parametrize("args, match", [
    ((_with_non_finite(_X, [7, 3]), _Y),
     r"x has 2 of 10 rows with NaN or infinite values, the first at row 3: "
     r"drop or impute"),
    ((_with_non_finite(_X, (5, 1), -np.inf), _Y),
     r"x has 1 of 10 rows .* first at row 5"),
    ((_X, _with_non_finite(_Y.astype(np.float32), [4], np.inf)),
     r"y has 1 of 10 rows with NaN or infinite values, the first at row 4"),
])
def test_non_finite_examples_are_refused(sampler, args, match):
  with pytest.raises(ValueError, match=match):
    sampler(*args, 2, seed=0)


@pytest.mark.parametrize("sampler", [sampling.poisson_batches,
                                     sampling.fixed_size_batches])
def test_finite_float_targets_and_numpy_scalars_are_accepted(sampler):
  targets = _Y.astype(np.float32) / 3  # Regression targets.
  sampled = sampler(_X, targets, np.int64(4), steps_per_epoch=np.int32(3),
                    seed=np.int64(0))
  assert isinstance(sampled.expected_batch_size, int)  # Not numpy's.
  assert sampled.expected_batch_size == 4
  assert sampled.steps_per_epoch == 3
  batches = list(sampled.dataset.as_numpy_iterator())
  assert len(batches) == 3
  for x, y in batches:
    np.testing.assert_allclose(x[:, 0] / 3, y)


def test_docstring_examples_run():
  import doctest  # pylint: disable=g-import-not-at-top

  result = doctest.testmod(sampling, extraglobs={"np": np, "tf": tf})
  assert result.attempted > 0 and result.failed == 0


def test_distributed_poisson_batches_on_one_replica_is_poisson():
  strategy = tf.distribute.get_strategy()
  sampled = sampling.distributed_poisson_batches(
      strategy, np.zeros([100, 2], np.float32), np.arange(100), 10)
  assert sampled.accountant_kwargs() == {
      "sampling": "poisson", "batch_size": 10, "dataset_size": 100}
  iterator = iter(sampled.dataset)
  sizes = [len(next(iterator)[1]) for _ in range(400)]
  # Binomial(100, 0.1): mean 10, variance 9; 400 steps.
  assert abs(np.mean(sizes) - 10) < 5.5 * 3 / np.sqrt(400)
  assert 4.0 < np.var(sizes) < 16.0
  with pytest.raises(ValueError, match="expected_batch_size"):
    sampling.distributed_poisson_batches(strategy, np.zeros([5, 2]),
                                         np.zeros(5), 6)
