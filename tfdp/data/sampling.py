"""Batch samplers whose sampling the privacy accountant models.

DP-SGD's privacy guarantee depends on how batches are drawn. The accountant
(`tfdp.privacy.accounting`) knows two samplers, and this module implements
exactly those two:

* `poisson_batches` (POISSON): at every step each example joins the batch
  independently with probability q; the batch size varies.
* `fixed_size_batches` (FIXED_SIZE): at every step a uniformly random subset
  of exactly b distinct examples, drawn independently of the other steps.

Both return a `SampledDataset`: a `tf.data.Dataset` of (x_batch, y_batch) with
`steps_per_epoch` elements, plus what the accountant needs. Each iteration of
the dataset (each Keras epoch) draws fresh batches: the per-step randomness
comes from `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`,
which yields a new stream of seeds each time the dataset is iterated, and each
seed drives a stateless draw. With a fixed `seed` the run is reproducible
(the same sequence of epochs), yet no two epochs or steps repeat. Without
one (the default) the stream is seeded from the OS's entropy, whatever
TensorFlow's global seed: the accountant's amplification by sampling assumes
that nobody knows which examples a batch holds, and a seed that is in the
code or on the command line would tell. Pass `seed` for tests only.

The whole dataset is held in memory as tensors and rows are gathered per
step. Floating-point x and y are checked once, at construction, for NaN and
infinite values: one such example would turn every update into NaN while the
accountant still charges the steps. Note that the usual
`dataset.shuffle().batch()` pipeline is neither of these samplers and its
privacy is not what the accountant reports.
"""

import dataclasses
import secrets
from typing import Any, Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.privacy.accounting import FIXED_SIZE, POISSON


@dataclasses.dataclass(frozen=True)
class SampledDataset:
  """Batches drawn by a sampler the privacy accountant knows.

  Attributes:
    dataset: yields (x_batch, y_batch); `steps_per_epoch` elements per
      iteration, and each new iteration (each Keras epoch) draws fresh batches.
      From `distributed_poisson_batches`, an endless
      `tf.distribute.DistributedDataset` of per-replica batches instead.
    sampling: `POISSON` or `FIXED_SIZE`.
    dataset_size: number of examples N.
    expected_batch_size: the expected (Poisson) or exact (fixed-size) batch
      size b.
    steps_per_epoch: number of batches per iteration of `dataset`.
  """
  dataset: Any
  sampling: str
  dataset_size: int
  expected_batch_size: int
  steps_per_epoch: int

  @property
  def sampling_probability(self) -> float:
    """q = expected_batch_size / dataset_size."""
    return self.expected_batch_size / self.dataset_size

  def accountant_kwargs(self) -> Dict[str, Any]:
    """Keyword arguments for the accountant (`PrivacyAccountant` and co)."""
    return {
        "sampling": self.sampling,
        "batch_size": self.expected_batch_size,
        "dataset_size": self.dataset_size,
    }


def _check_arrays(x: Any, y: Any) -> int:
  """Returns N = len(x) after checking x and y.

  They must be equally long, N >= 1, and hold no NaN or infinite value where
  they are floating-point.
  """
  n, n_y = np.shape(x)[:1], np.shape(y)[:1]
  if not n or not n_y:
    raise ValueError(
        "x and y must be arrays with one row per example, got shapes "
        f"{np.shape(x)} and {np.shape(y)}")
  if n != n_y:
    raise ValueError(
        f"x and y must have the same length, got {n[0]} and {n_y[0]}")
  if n[0] == 0:
    raise ValueError("x must hold at least one example, got 0: the dataset is "
                     "empty")
  _validation.check_finite_rows("x", x)
  _validation.check_finite_rows("y", y)
  return n[0]


def _check_batch_size(name: str, value: Any, dataset_size: int) -> int:
  value = _validation.check_positive_int(name, value)
  if value > dataset_size:
    raise ValueError(
        f"{name} must be <= the dataset size {dataset_size}, got {value}: it "
        "is larger than the dataset")
  return value


def _check_steps(steps_per_epoch: Optional[int], dataset_size: int,
                 batch_size: int) -> int:
  """Returns steps_per_epoch, by default round(N / b): one expected pass."""
  if steps_per_epoch is None:
    return max(1, round(dataset_size / batch_size))
  return _validation.check_positive_int("steps_per_epoch", steps_per_epoch)


def _sampled_dataset(x: Any, y: Any, sampling: str, batch_size: int,
                     steps_per_epoch: Optional[int], seed: Optional[int],
                     select: Callable[[tf.Tensor, int, int], tf.Tensor]
                     ) -> SampledDataset:
  """Builds the batches: per step, `select(step_seed, N, b)` gives the rows."""
  n = _check_arrays(x, y)
  batch_size = _check_batch_size(
      "expected_batch_size" if sampling == POISSON else "batch_size",
      batch_size, n)
  steps = _check_steps(steps_per_epoch, n, batch_size)
  if seed is None:
    # Not None: tf.data would derive it from the global seed when one is set.
    seed = secrets.randbits(63)
  else:
    seed = _validation.check_non_negative_int("seed", seed)
  x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)

  def gather(step_seed):
    indices = select(step_seed, n, batch_size)
    return tf.gather(x, indices), tf.gather(y, indices)

  # Pairs of random int64s, fresh on every iteration: one stateless seed a step.
  step_seeds = tf.data.Dataset.random(
      seed=seed, rerandomize_each_iteration=True).batch(2).take(steps)
  dataset = step_seeds.map(
      gather, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).prefetch(tf.data.AUTOTUNE)
  sampled = SampledDataset(dataset=dataset, sampling=sampling,
                           dataset_size=n, expected_batch_size=batch_size,
                           steps_per_epoch=steps)
  # What `sampler_of` reads back (the dataset cannot hold `sampled` itself
  # without a cycle).
  dataset._tfdp_sampler = dataclasses.replace(sampled, dataset=None)  # pylint: disable=protected-access
  return sampled


# Transformations that keep a sampler's batches as they are: every element
# is still one sampled batch (repeat: more steps; take: fewer).
_PASS_THROUGH = ("RepeatDataset", "TakeDataset", "PrefetchDataset",
                 "OptionsDataset", "CacheDataset")


def _kind(dataset: tf.data.Dataset) -> str:
  """The transformation's class name, e.g. "RepeatDataset" for repeat()."""
  return type(dataset).__name__.lstrip("_")


def _input_datasets(dataset: tf.data.Dataset):
  try:
    return list(dataset._inputs())  # pylint: disable=protected-access
  except (AttributeError, NotImplementedError):
    return []


def sampler_of(dataset: tf.data.Dataset) -> Optional[SampledDataset]:
  """The tfdp sampler whose batches `dataset` yields, or None.

  Found on a `SampledDataset.dataset` or on it after transformations that
  keep its batches (repeat, take, prefetch, options, cache). The result
  describes the sampler (its `dataset` field is None).
  """
  while True:
    sampler = getattr(dataset, "_tfdp_sampler", None)
    if sampler is not None:
      return sampler
    inputs = _input_datasets(dataset)
    if _kind(dataset) not in _PASS_THROUGH or len(inputs) != 1:
      return None
    dataset = inputs[0]


def is_batched(dataset: tf.data.Dataset) -> bool:
  """True if `dataset` batches elements (batch, padded_batch...) somewhere.

  A batched pipeline such as `shuffle().batch()` puts every example in
  exactly one batch per pass: neither sampler the accountant models. A tfdp
  sampler's own inner workings do not count.
  """
  pending = [dataset]
  while pending:
    current = pending.pop()
    if "Batch" in _kind(current):
      return True
    if getattr(current, "_tfdp_sampler", None) is None:  # Not a sampler's.
      pending.extend(_input_datasets(current))
  return False


def poisson_batches(x: Any,
                    y: Any,
                    expected_batch_size: int,
                    *,
                    steps_per_epoch: Optional[int] = None,
                    seed: Optional[int] = None) -> SampledDataset:
  """Poisson-sampled batches (the sampler DP-SGD's analysis assumes).

  At every step each of the N examples joins the batch independently with
  probability q = expected_batch_size / N:

      i in batch  <=>  u_i < q,   u_i ~ Uniform[0, 1) i.i.d. (per step)

  so the batch size is Binomial(N, q): mean N q, variance N q (1 - q), and it
  may be 0 (an empty batch keeps the shapes and dtypes of x and y). Rows keep
  their order in x.

  Args:
    x: per-example inputs, first axis N (any dtype, kept; floating-point
      inputs must be finite).
    y: per-example labels or targets, first axis N (any dtype, kept).
      Class labels for a sparse categorical loss must be integers (the
      private train step refuses fractional ones); floating-point y is for
      regression targets (or one-hot labels) and must be finite.
    expected_batch_size: the expected batch size N q, an integer in [1, N].
    steps_per_epoch: batches per iteration; default round(N /
      expected_batch_size), one expected pass over the data.
    seed: None (default) for a secret sequence from the OS's entropy; a
      non-negative integer for a reproducible one (tests only: it makes
      batch membership public, which the accountant assumes it is not).

  Returns:
    A `SampledDataset` with sampling `POISSON`.

  Raises:
    ValueError: for x and y of different lengths or with no example, for a
      NaN or infinite value in floating-point x or y (the message counts the
      bad rows and gives the first), or for an argument out of its range.
  """

  def select(step_seed, n, b):
    q = b / n
    u = tf.random.stateless_uniform([n], seed=step_seed, dtype=tf.float64)
    return tf.where(u < q)[:, 0]

  return _sampled_dataset(x, y, POISSON, expected_batch_size, steps_per_epoch,
                          seed, select)


def fixed_size_batches(x: Any,
                       y: Any,
                       batch_size: int,
                       *,
                       steps_per_epoch: Optional[int] = None,
                       seed: Optional[int] = None) -> SampledDataset:
  """Batches of exactly `batch_size` examples, each a fresh uniform subset.

  At every step the batch is a uniformly random subset of b = batch_size
  distinct examples out of N (sampling without replacement within the step:
  the first b entries of a uniform random permutation), drawn independently
  of all other steps; each example is in a given batch with probability b / N.

  This is not shuffle-and-partition (shuffle once per epoch, cut into
  consecutive batches so that every example appears once per epoch): that
  sampler makes the batches of an epoch dependent, and the privacy accountant
  does not model it.

  Args:
    x: per-example inputs, first axis N (any dtype, kept; floating-point
      inputs must be finite).
    y: per-example labels or targets, first axis N (any dtype, kept).
      Class labels for a sparse categorical loss must be integers (the
      private train step refuses fractional ones); floating-point y is for
      regression targets (or one-hot labels) and must be finite.
    batch_size: the batch size b, an integer in [1, N].
    steps_per_epoch: batches per iteration; default round(N / batch_size).
    seed: None (default) for a secret sequence from the OS's entropy; a
      non-negative integer for a reproducible one (tests only: it makes
      batch membership public, which the accountant assumes it is not).

  Returns:
    A `SampledDataset` with sampling `FIXED_SIZE`.

  Raises:
    ValueError: as `poisson_batches`.
  """

  def select(step_seed, n, b):
    permutation = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=step_seed)
    return permutation[:b]

  return _sampled_dataset(x, y, FIXED_SIZE, batch_size, steps_per_epoch, seed,
                          select)


def distributed_poisson_batches(strategy: tf.distribute.Strategy,
                                x: Any,
                                y: Any,
                                expected_batch_size: int,
                                *,
                                steps_per_epoch: Optional[int] = None,
                                seed: Optional[int] = None) -> SampledDataset:
  """Poisson-sampled batches for the replicas of a `tf.distribute` strategy.

  Replica g of the R replicas in sync (on any worker) owns the examples
  i with i mod R = g; at every step it keeps each of them independently
  with the same q = expected_batch_size / N, N the WHOLE dataset:

      i in replica g's batch  <=>  i mod R = g  and  u_i < q

  The owners partition the examples and every u_i is independent, so the
  union of the replicas' batches is exactly `poisson_batches`' sample of
  the whole set, with the q the accountant uses. Each worker (every one
  holds x and y) builds only its replicas' batches, through
  `strategy.distribute_datasets_from_function`; the optimizer sums the
  clipped gradients over all replicas and divides by expected_batch_size.

  The step seeds are drawn as in `poisson_batches` (secret unless `seed` is
  given) and folded with g, so that no two replicas share their draws.
  Pass `steps_per_epoch=sampled.steps_per_epoch` to `fit`: the dataset is an
  endless `tf.distribute.DistributedDataset`.

  Args:
    strategy: MirroredStrategy, MultiWorkerMirroredStrategy or the default.
    x: per-example inputs, first axis N, the same on every worker.
    y: per-example labels, first axis N, the same on every worker.
    expected_batch_size: the expected GLOBAL batch N q, in [1, N].
    steps_per_epoch: steps per epoch; default round(N / expected_batch_size).
    seed: None (default, secret) or a non-negative integer (tests only).

  Returns:
    A `SampledDataset` with sampling `POISSON` whose `dataset` is the
    distributed dataset.

  Example:
    >>> strategy = tf.distribute.get_strategy()
    >>> sampled = distributed_poisson_batches(
    ...     strategy, np.zeros([100, 3]), np.zeros([100]), 10, seed=0)
    >>> sampled.sampling_probability, sampled.steps_per_epoch
    (0.1, 10)
  """
  n = _check_arrays(x, y)
  batch_size = _check_batch_size("expected_batch_size", expected_batch_size, n)
  steps = _check_steps(steps_per_epoch, n, batch_size)
  seed = (secrets.randbits(63) if seed is None else
          _validation.check_non_negative_int("seed", seed))
  replicas = strategy.num_replicas_in_sync
  q = batch_size / n

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    x_tensor, y_tensor = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    local = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * local

    def replica_batch(step_seed, owner):
      rows = tf.range(owner, n, replicas, dtype=tf.int64)
      u = tf.random.stateless_uniform(
          tf.shape(rows), seed=tf.random.experimental.stateless_fold_in(
              step_seed, owner), dtype=tf.float64)
      kept = tf.boolean_mask(rows, u < q)
      return tf.gather(x_tensor, kept), tf.gather(y_tensor, kept)

    # One element per local replica and step, step-major: the order in
    # which distribute_datasets_from_function hands elements to replicas.
    step_seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return step_seeds.flat_map(
        lambda step_seed: tf.data.Dataset.range(first, first + local).map(
            lambda owner: replica_batch(step_seed, owner))).prefetch(
                tf.data.AUTOTUNE)

  dataset = strategy.distribute_datasets_from_function(dataset_fn)
  sampled = SampledDataset(dataset=dataset, sampling=POISSON,
                           dataset_size=n, expected_batch_size=batch_size,
                           steps_per_epoch=steps)
  dataset._tfdp_sampler = dataclasses.replace(sampled, dataset=None)  # pylint: disable=protected-access
  return sampled
