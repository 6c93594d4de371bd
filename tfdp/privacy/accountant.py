"""A checkpointable counter of DP-SGD steps that reports the privacy spent."""

# The accountant shares accounting.py's private checks and cached epsilons.
# pylint: disable=protected-access

from typing import Any, Dict, Optional

import tensorflow as tf

from tfdp import _validation
from tfdp.privacy import accounting


class PrivacyAccountant(tf.Module):
  """Counts the DP-SGD steps actually taken and reports the privacy spent.

  The step count is a non-trainable int64 variable, so
  ``tf.train.Checkpoint(accountant=accountant)`` saves and restores it and a
  resumed run keeps accounting for the steps taken before. Under a
  distribution strategy the count is aggregated ``ONLY_FIRST_REPLICA``: each
  step, taken once across all replicas, counts once.

  Epsilon after ``T`` steps is `accounting.compute_epsilon` of the
  constructor's arguments at ``T`` (dp_accounting results are cached per
  step count).
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
               name: Optional[str] = None):
    """Creates an accountant with no step taken.

    Args:
      noise_multiplier: sigma, the noise standard deviation over the clipping
        norm; >= 0.
      delta: The target delta, in (0, 1).
      sampling: ``POISSON`` or ``FIXED_SIZE``.
      sampling_probability: q in (0, 1] (Poisson only); or else give
      batch_size: the (expected) batch size, in [1, dataset_size], and
      dataset_size: the number of private examples, >= 1.
      accountant: ``PLD`` or ``RDP`` (fixed-size sampling always uses RDP).
      name: The module name.

    Raises:
      ValueError: on an argument out of range.
    """
    super().__init__(name=name)
    self._sampling = accounting._check_arguments(
        sampling, sampling_probability, batch_size, dataset_size,
        noise_multiplier=noise_multiplier, delta=delta, accountant=accountant)
    self._config = {
        "noise_multiplier": float(noise_multiplier),
        "delta": float(delta),
        "sampling": sampling,
        "sampling_probability": sampling_probability,
        "batch_size": batch_size,
        "dataset_size": dataset_size,
        "accountant": accountant,
        "name": self.name,
    }
    with self.name_scope:
      self._steps = tf.Variable(
          0,
          dtype=tf.int64,
          trainable=False,
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
          name="steps")

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
    """The accountant actually used (``"rdp"`` for fixed-size sampling)."""
    return accounting._accountant_used(self._config["accountant"],
                                       self._sampling)

  @property
  def steps(self) -> int:
    """The number of steps recorded so far."""
    return int(self._steps.numpy())

  def record_steps(self, num_steps: int = 1) -> None:
    """Adds `num_steps` (an integer >= 0) to the step count."""
    _validation.check_non_negative_int("num_steps", num_steps)
    self._steps.assign_add(num_steps)

  def spent(self) -> accounting.PrivacySpent:
    """The privacy spent by the steps recorded so far."""
    return self._spent_at(self.steps)

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
        self._config["accountant"])
