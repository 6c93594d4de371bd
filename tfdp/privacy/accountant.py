"""A checkpointable counter of DP-SGD steps that reports the privacy spent."""

# The accountant shares accounting.py's private checks and cached epsilons.
# pylint: disable=protected-access

import weakref
from typing import Any, Dict, Optional

from absl import logging
import tensorflow as tf

from tfdp import _validation
from tfdp.privacy import accounting


class PrivacyAccountant(tf.Module):
  """Counts the DP-SGD steps actually taken and reports the privacy spent.

  Steps reach the count in one of two ways:

  * **Tracking a DP optimizer** (`track`; `tfdp.callbacks.PrivacyCallback`
    does it): every DP step is one `apply_gradients` of the optimizer, so the
    count follows `optimizer.iterations`, read whenever `steps` or `spent`
    is asked, whatever callbacks run or in which order. The accountant
    remembers the iterations it has counted and the optimizer's
    `dp_lineage` token: a restored optimizer (same token) adds only the
    iterations it took since; an optimizer of another run (other token)
    adds all of its iterations. Tracking also makes the accountant a
    checkpoint dependency of the optimizer, so whatever saves the optimizer
    (`tf.keras.callbacks.BackupAndRestore`, `tf.train.Checkpoint(model=...)`,
    `model.save`) saves the count in the same snapshot, and a new process
    that restores them continues the count of the restored weights'
    lineage (steps lost to a crash after the last backup left nothing
    behind and are not counted). Within one process the count never goes
    down: going back to an older checkpoint keeps the steps taken since.
  * **By hand** (`record_steps`), for trainers that release noise
    themselves.

  The counters are non-trainable int64 variables, so
  ``tf.train.Checkpoint(accountant=accountant)`` saves and restores them
  too. Under a distribution strategy they are aggregated
  ``ONLY_FIRST_REPLICA``: each step, taken once across all replicas, counts
  once.

  Epsilon after ``T`` steps is `accounting.compute_epsilon` of the
  constructor's arguments at ``T`` (dp_accounting results are cached per
  step count).

  Example:
    >>> optimizer = tfdp.optimizers.DPSGD(
    ...     learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.1,
    ...     expected_batch_size=64)
    >>> accountant = PrivacyAccountant(1.1, delta=1e-5, batch_size=64,
    ...                                dataset_size=1437)
    >>> accountant.track(optimizer)
    >>> # model.compile(optimizer=optimizer, ...); model.fit(...)
    >>> accountant.spent().steps  # == optimizer.iterations
    0
  """

  def __init__(self,
               noise_multiplier: float,
               delta: float,
               *,
               sampling: str = accounting.POISSON,
               sampling_probability: Optional[float] = None,
               batch_size: Optional[int] = None,
               dataset_size: Optional[int] = None,
               accountant: str = accounting.PLD,
               release_noise_multiplier: Optional[float] = None,
               name: Optional[str] = None):
    """Creates an accountant with no step taken.

    Args:
      noise_multiplier: sigma, the noise standard deviation over the clipping
        norm; 0 or >= 1e-100.
      delta: The target delta, in (0, 1).
      sampling: ``POISSON`` or ``FIXED_SIZE``.
      sampling_probability: q in (0, 1] (Poisson only); or else give
      batch_size: the (expected) batch size, in [1, dataset_size], and
      dataset_size: the number of private examples, >= 1.
      accountant: ``PLD`` or ``RDP`` (fixed-size sampling always uses RDP).
      release_noise_multiplier: None, or the noise multiplier of one
        Gaussian release on the whole dataset that every report composes
        with the steps (e.g. a DP-GAN's mean samples); see
        `accounting.compute_epsilon`.
      name: The module name.

    Raises:
      ValueError: on an argument out of range.
    """
    super().__init__(name=name)
    self._sampling = accounting._check_arguments(
        sampling, sampling_probability, batch_size, dataset_size,
        noise_multiplier=noise_multiplier, delta=delta, accountant=accountant,
        release_noise_multiplier=release_noise_multiplier)
    self._config = {
        "noise_multiplier": float(noise_multiplier),
        "delta": float(delta),
        "sampling": sampling,
        "sampling_probability": sampling_probability,
        "batch_size": batch_size,
        "dataset_size": dataset_size,
        "accountant": accountant,
        "release_noise_multiplier": release_noise_multiplier,
        "name": self.name,
    }
    with self.name_scope:
      self._steps = self._counter("steps")
      # The tracked optimizer's dp_lineage and the iterations of it counted.
      self._lineage = self._counter("optimizer_lineage")
      self._counted_iterations = self._counter("counted_iterations")
    # Not a tracked attribute: the optimizer saves the accountant, not the
    # other way round.
    self._optimizer = None
    # The most steps this object has counted: a restore in this process
    # never lowers the count.
    self._most_steps = 0
    self._warned_untracked = False
    dataset_size = self._sampling.dataset_size
    if dataset_size is not None and delta >= 1 / dataset_size:
      logging.warning(
          "tfdp: delta=%g is not below 1/N = 1/%d. A mechanism that publishes "
          "a random example in full is (0, 1/N)-DP, so such a delta allows "
          "leaking whole examples. Use delta well below 1/N, e.g. %.1g.",
          delta, dataset_size, 1 / (10 * dataset_size))

  @staticmethod
  def _counter(name: str) -> tf.Variable:
    return tf.Variable(0, dtype=tf.int64, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                       name=name)

  @property
  def noise_multiplier(self) -> float:
    return self._config["noise_multiplier"]

  @property
  def delta(self) -> float:
    return self._config["delta"]

  @property
  def sampling(self) -> str:
    return self._sampling.sampling

  @property
  def sampling_probability(self) -> float:
    """q: the sampling probability, or batch_size / dataset_size."""
    return self._sampling.probability

  @property
  def accountant(self) -> str:
    """The accountant asked for (``"rdp"`` for fixed-size sampling).

    Outside its range the PLD accountant is guarded and may fall back to RDP
    (see `accounting`): each `PrivacySpent` names the one that produced it.
    """
    return accounting._accountant_used(self._config["accountant"],
                                       self._sampling)

  @property
  def steps(self) -> int:
    """The number of steps counted so far (the tracked optimizer's included)."""
    self._count_optimizer_steps()
    steps = int(self._steps.numpy())
    if steps < self._most_steps:
      # Restored (with its optimizer) from an older checkpoint in this
      # process: the steps taken since were taken all the same.
      self._steps.assign(self._most_steps)
      steps = self._most_steps
    self._most_steps = steps
    return steps

  def track(self, optimizer) -> None:
    """Counts every step `optimizer` takes from now on, and those it took.

    Idempotent for the same optimizer. See the class docstring for how a
    restored or different optimizer is counted.

    Args:
      optimizer: a tfdp DP optimizer (`tfdp.optimizers`) with this
        accountant's noise multiplier and, if the accountant was given one,
        its batch size as `expected_batch_size`.

    Raises:
      ValueError: for a non-DP optimizer or one that does not match.
    """
    self._check_optimizer(optimizer)
    if self._optimizer is None or self._optimizer() is not optimizer:
      self._count_optimizer_steps()  # What the previous optimizer took.
      self._optimizer = weakref.ref(optimizer)
      # A checkpoint dependency: saved and restored with the optimizer.
      optimizer._tfdp_accountant = self
    self._count_optimizer_steps()

  def _check_optimizer(self, optimizer) -> None:
    if not isinstance(getattr(optimizer, "dp_lineage", None), tf.Variable):
      raise ValueError(
          f"The model is compiled with a non-private optimizer "
          f"({type(optimizer).__name__}): it would train without clipping or "
          "noise. Compile with a tfdp.optimizers DP optimizer, e.g. "
          "tfdp.optimizers.DPSGD(...) or make_dp_optimizer(...).")
    if optimizer.noise_multiplier != self.noise_multiplier:
      raise ValueError(
          f"accountant.noise_multiplier ({self.noise_multiplier}) differs "
          "from the optimizer's noise_multiplier "
          f"({optimizer.noise_multiplier}): the reported epsilon would be "
          "wrong. Build both from the same value.")
    batch_size = self._config["batch_size"]
    if batch_size is not None and batch_size != optimizer.expected_batch_size:
      raise ValueError(
          f"accountant batch_size ({batch_size}) differs from the optimizer's "
          f"expected_batch_size ({optimizer.expected_batch_size}): the noise "
          "is calibrated to one and the accounting to the other. Build both "
          "from the same value.")

  def _count_optimizer_steps(self) -> None:
    """Adds the tracked optimizer's iterations not counted yet."""
    optimizer = self._optimizer() if self._optimizer is not None else None
    if optimizer is None:
      return
    lineage = int(optimizer.dp_lineage.numpy())
    iterations = int(optimizer.iterations.numpy())
    counted = (int(self._counted_iterations.numpy())
               if int(self._lineage.numpy()) == lineage else 0)
    if iterations > counted:
      self._steps.assign_add(iterations - counted)
    self._lineage.assign(lineage)
    self._counted_iterations.assign(iterations)

  def record_steps(self, num_steps: int = 1) -> None:
    """Adds `num_steps` (an integer >= 0) to the step count, by hand."""
    num_steps = _validation.check_non_negative_int("num_steps", num_steps)
    self._steps.assign_add(num_steps)

  def spent(self) -> accounting.PrivacySpent:
    """The privacy spent by the steps counted so far."""
    steps = self.steps
    if (steps == 0 and self._optimizer is None and
        not self._warned_untracked):
      self._warned_untracked = True
      logging.warning(
          "tfdp: this PrivacyAccountant tracks no optimizer and no step was "
          "recorded, so it reports epsilon 0. If a model was trained, attach "
          "the accountant: callbacks=[tfdp.callbacks.PrivacyCallback("
          "accountant)] or accountant.track(optimizer).")
    return self._spent_at(steps)

  def spent_after(self, additional_steps: int) -> accounting.PrivacySpent:
    """The privacy that would be spent after `additional_steps` more steps."""
    _validation.check_non_negative_int("additional_steps", additional_steps)
    return self._spent_at(self.steps + additional_steps)

  def get_config(self) -> Dict[str, Any]:
    """The constructor arguments, JSON-able: ``PrivacyAccountant(**config)``."""
    return dict(self._config)

  def _spent_at(self, steps: int) -> accounting.PrivacySpent:
    return accounting._privacy_spent(
        self.noise_multiplier, steps, self.delta, self._sampling,
        self._config["accountant"], self._config["release_noise_multiplier"])
