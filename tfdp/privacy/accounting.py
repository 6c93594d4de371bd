"""Privacy accounting for DP-SGD, on top of dp_accounting.

One DP-SGD step releases the sum of clipped per-example gradients plus
Gaussian noise, ``sum_{i in B} clip_C(g_i) + N(0, (sigma C)^2 I)``, on a batch
``B`` drawn by one of two samplers:

* ``POISSON``: each of the ``n`` examples joins each batch independently with
  probability ``q`` (expected batch size ``q n``). Privacy is stated for the
  add/remove-one relation, under which the clipped sum has L2 sensitivity
  ``C``, so each step is the Poisson-subsampled Gaussian mechanism with noise
  multiplier ``sigma``.
* ``FIXED_SIZE``: each batch is a uniformly random subset of exactly ``b`` of
  the ``n`` examples, drawn without replacement, independently per step.
  Subsampling without replacement is only analysed for the replace-one
  relation (the dataset size ``n`` is public), under which the clipped sum
  has L2 sensitivity ``2 C`` (``clip_C(g) - clip_C(g')`` can have norm ``2 C``),
  so each step is a Gaussian mechanism with noise multiplier
  ``sigma C / (2 C) = sigma / 2`` on a sample of ``b`` of ``n``.

``T`` steps compose: ``SelfComposedDpEvent(step, T)``. The epsilon at a given
delta comes from dp_accounting's PLD accountant (tight, the default) or its RDP
accountant. dp_accounting's PLD accountant does not handle sampling without
replacement, so fixed-size sampling is always accounted with RDP.

The two relations put epsilon on different scales: a replacement is a removal
then an addition, so an (epsilon, delta) add/remove-one guarantee gives
(2 epsilon, (1 + e^epsilon) delta) under replace-one; replace-one in turn
treats the dataset size as public.
"""

import dataclasses
import functools
import math
from typing import Optional

import dp_accounting

from tfdp import _validation

POISSON = "poisson"
FIXED_SIZE = "fixed_size"
SAMPLINGS = (POISSON, FIXED_SIZE)

PLD = "pld"
RDP = "rdp"
ACCOUNTANTS = (PLD, RDP)

_SAMPLING_NAMES = {POISSON: "Poisson", FIXED_SIZE: "fixed-size"}

_NEIGHBORING_RELATIONS = {
    POISSON: dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    FIXED_SIZE: dp_accounting.NeighboringRelation.REPLACE_ONE,
}

# The check for each scalar argument a public entry point may take.
_SCALAR_CHECKS = {
    "noise_multiplier": _validation.check_non_negative,
    "steps": _validation.check_non_negative_int,
    "delta": _validation.check_open_unit_interval,
    "target_epsilon": _validation.check_positive,
    "tolerance": _validation.check_open_unit_interval,
    "max_noise_multiplier": _validation.check_positive,
    "accountant": functools.partial(
        _validation.check_choice, choices=ACCOUNTANTS),
}

# Upper bound on the bracket splits of calibrate_noise_multiplier.
_MAX_SPLITS = 100
# Floor for epsilons whose log is taken.
_TINY = 1e-300


@dataclasses.dataclass(frozen=True)
class PrivacySpent:
  """The (epsilon, delta) guarantee of DP-SGD after some steps.

  Attributes:
    epsilon: The epsilon at `delta` (``inf`` when the noise multiplier is 0).
    delta: The target delta.
    accountant: The accountant actually used, ``"pld"`` or ``"rdp"``.
    sampling: The batch sampler, ``POISSON`` or ``FIXED_SIZE``.
    noise_multiplier: Noise standard deviation over the clipping norm.
    steps: The number of DP-SGD steps accounted for.
    sampling_probability: ``q``, the (expected) batch size over the dataset
      size.
  """
  epsilon: float
  delta: float
  accountant: str
  sampling: str
  noise_multiplier: float
  steps: int
  sampling_probability: float

  def __str__(self) -> str:
    return (f"epsilon={self.epsilon:.3g} at delta={self.delta:g} after "
            f"{self.steps} steps ({self.accountant.upper()} accountant, "
            f"{_SAMPLING_NAMES[self.sampling]} sampling "
            f"q={self.sampling_probability:.3g}, noise multiplier "
            f"{self.noise_multiplier:.3g})")


@dataclasses.dataclass(frozen=True)
class _Sampling:
  """A validated batch sampler; `probability` is q in both cases."""
  sampling: str
  probability: float
  batch_size: Optional[int]
  dataset_size: Optional[int]


def _check_arguments(sampling, sampling_probability, batch_size, dataset_size,
                     **scalars) -> _Sampling:
  """Validates the arguments of a public entry point, once.

  Args:
    sampling: One of `SAMPLINGS`.
    sampling_probability: q in (0, 1], or None when the batch and dataset sizes
      are given.
    batch_size: The (expected) batch size, or None.
    dataset_size: The number of private examples, or None.
    **scalars: The other arguments, by name, each checked by its entry in
      `_SCALAR_CHECKS`.

  Returns:
    The sampler, with ``q = sampling_probability`` or
    ``q = batch_size / dataset_size``.

  Raises:
    ValueError: naming the first bad argument and its allowed range.
  """
  for name, value in scalars.items():
    _SCALAR_CHECKS[name](name, value)
  _validation.check_choice("sampling", sampling, SAMPLINGS)
  sizes_given = batch_size is not None or dataset_size is not None
  if sampling_probability is not None:
    if sizes_given:
      raise ValueError(
          "Pass either sampling_probability or (batch_size, dataset_size), "
          f"not both; got sampling_probability={sampling_probability!r}, "
          f"batch_size={batch_size!r}, dataset_size={dataset_size!r}")
    if sampling == FIXED_SIZE:
      raise ValueError(
          "Fixed-size sampling needs batch_size and dataset_size (the "
          "accounting depends on both, not only on their ratio); got only "
          f"sampling_probability={sampling_probability!r}")
    q = _validation.check_probability(
        "sampling_probability", sampling_probability)
    return _Sampling(sampling, q, None, None)
  if batch_size is None or dataset_size is None:
    raise ValueError(
        "Pass sampling_probability, or both batch_size and dataset_size; got "
        f"batch_size={batch_size!r}, dataset_size={dataset_size!r}")
  if dataset_size == 0:
    raise ValueError(
        "dataset_size must be an integer >= 1, got 0: the dataset is empty")
  _validation.check_positive_int("dataset_size", dataset_size)
  _validation.check_positive_int("batch_size", batch_size)
  if batch_size > dataset_size:
    raise ValueError(f"batch_size ({batch_size}) is larger than the dataset "
                     f"({dataset_size} examples)")
  return _Sampling(sampling, batch_size / dataset_size, batch_size,
                   dataset_size)


def _accountant_used(accountant: str, sampling: _Sampling) -> str:
  """RDP for fixed-size sampling (dp_accounting's PLD lacks it), else ask."""
  return RDP if sampling.sampling == FIXED_SIZE else accountant


def _event(noise_multiplier: float, steps: int,
           sampling: _Sampling) -> dp_accounting.DpEvent:
  """The DpEvent of `steps` DP-SGD steps; see the module docstring."""
  if sampling.sampling == POISSON:
    step = dp_accounting.PoissonSampledDpEvent(
        sampling.probability, dp_accounting.GaussianDpEvent(noise_multiplier))
  else:
    # Replace-one sensitivity of the clipped sum is 2C: multiplier sigma / 2.
    step = dp_accounting.SampledWithoutReplacementDpEvent(
        sampling.dataset_size, sampling.batch_size,
        dp_accounting.GaussianDpEvent(noise_multiplier / 2))
  return dp_accounting.SelfComposedDpEvent(step, steps)


@functools.lru_cache(maxsize=4096)
def _epsilon(noise_multiplier: float, steps: int, delta: float,
             sampling: _Sampling, accountant: str) -> float:
  """Epsilon at `delta` after `steps` steps, from dp_accounting (cached).

  No step releases nothing (epsilon 0); steps without noise release the
  exact clipped sums (epsilon infinite).
  """
  if steps == 0:
    return 0.0
  if noise_multiplier == 0:
    return math.inf
  if accountant == PLD:
    dp_accountant = dp_accounting.pld.PLDAccountant()
  else:
    dp_accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=_NEIGHBORING_RELATIONS[sampling.sampling])
  dp_accountant.compose(_event(noise_multiplier, steps, sampling))
  return float(dp_accountant.get_epsilon(delta))


def _privacy_spent(noise_multiplier: float, steps: int, delta: float,
                   sampling: _Sampling, accountant: str) -> PrivacySpent:
  """`PrivacySpent` for already validated arguments."""
  accountant = _accountant_used(accountant, sampling)
  return PrivacySpent(
      epsilon=_epsilon(float(noise_multiplier), steps, float(delta), sampling,
                       accountant),
      delta=float(delta),
      accountant=accountant,
      sampling=sampling.sampling,
      noise_multiplier=float(noise_multiplier),
      steps=steps,
      sampling_probability=sampling.probability)


def dpsgd_event(noise_multiplier: float,
                steps: int,
                *,
                sampling: str = POISSON,
                sampling_probability: Optional[float] = None,
                batch_size: Optional[int] = None,
                dataset_size: Optional[int] = None) -> dp_accounting.DpEvent:
  """The dp_accounting event of `steps` DP-SGD steps.

  * ``POISSON``: ``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)``
    with ``q = sampling_probability`` or ``batch_size / dataset_size``
    (``batch_size`` is then the expected batch size); for the add/remove-one
    relation.
  * ``FIXED_SIZE``: ``SelfComposed(SampledWithoutReplacement(dataset_size,
    batch_size, Gaussian(sigma / 2)), steps)``, for the replace-one relation,
    under which the clipped sum has sensitivity ``2 C`` and the noise
    ``N(0, (sigma C)^2)`` is ``sigma / 2`` times that sensitivity.
    dp_accounting's RDP accountant reads the Gaussian's noise multiplier as
    noise over sensitivity and does not halve it for replace-one itself
    (google/differential-privacy issue 378); passing sigma would understate
    the RDP four-fold.

  Args:
    noise_multiplier: sigma, the noise standard deviation over the clipping
      norm C; >= 0.
    steps: The number of steps; >= 0.
    sampling: ``POISSON`` or ``FIXED_SIZE``.
    sampling_probability: q in (0, 1] (Poisson only); or else give
    batch_size: the (expected) batch size, in [1, dataset_size], and
    dataset_size: the number of private examples, >= 1.

  Returns:
    The `dp_accounting.DpEvent`.

  Raises:
    ValueError: on an argument out of range.
  """
  sampling = _check_arguments(
      sampling, sampling_probability, batch_size, dataset_size,
      noise_multiplier=noise_multiplier, steps=steps)
  return _event(float(noise_multiplier), steps, sampling)


def compute_epsilon(noise_multiplier: float,
                    steps: int,
                    delta: float,
                    *,
                    sampling: str = POISSON,
                    sampling_probability: Optional[float] = None,
                    batch_size: Optional[int] = None,
                    dataset_size: Optional[int] = None,
                    accountant: str = PLD) -> PrivacySpent:
  """The epsilon at `delta` spent by `steps` DP-SGD steps.

  The event is `dpsgd_event`'s; the epsilon is dp_accounting's PLD accountant
  (with its defaults) or its RDP accountant. Fixed-size sampling is always
  accounted with RDP under the replace-one relation (the result's
  `accountant` says ``"rdp"``); Poisson sampling with add/remove-one.
  ``steps == 0`` gives epsilon 0, ``noise_multiplier == 0`` (with steps)
  gives epsilon ``inf``.

  Args:
    noise_multiplier: sigma, the noise standard deviation over the clipping
      norm; >= 0.
    steps: The number of steps taken; >= 0.
    delta: The target delta, in (0, 1).
    sampling: ``POISSON`` or ``FIXED_SIZE``.
    sampling_probability: q in (0, 1] (Poisson only); or else give
    batch_size: the (expected) batch size, in [1, dataset_size], and
    dataset_size: the number of private examples, >= 1.
    accountant: ``PLD`` (tighter) or ``RDP``.

  Returns:
    A `PrivacySpent`.

  Raises:
    ValueError: on an argument out of range.
  """
  sampling = _check_arguments(
      sampling, sampling_probability, batch_size, dataset_size,
      noise_multiplier=noise_multiplier, steps=steps, delta=delta,
      accountant=accountant)
  return _privacy_spent(noise_multiplier, steps, delta, sampling, accountant)


def calibrate_noise_multiplier(target_epsilon: float,
                               delta: float,
                               steps: int,
                               *,
                               sampling: str = POISSON,
                               sampling_probability: Optional[float] = None,
                               batch_size: Optional[int] = None,
                               dataset_size: Optional[int] = None,
                               accountant: str = PLD,
                               tolerance: float = 0.01,
                               max_noise_multiplier: float = 1000.0) -> float:
  """The noise multiplier that spends (about) `target_epsilon` in `steps`.

  epsilon(sigma) (as `compute_epsilon` gives it) decreases in sigma. The
  search brackets the solution, ``epsilon(lo) > target >= epsilon(hi)``, by
  doubling or halving sigma from 1 (not from a tiny sigma: the PLDs of small
  sigmas are wide and slow to compute), then splits ``[lo, hi]`` until
  ``target (1 - tolerance) <= epsilon(hi) <= target``, and returns ``hi``: the
  result never spends more than `target_epsilon`. Each split point is the
  Illinois regula falsi step on ``f(sigma) = log(epsilon(sigma) / goal)``,
  ``goal = target (1 - tolerance / 2)``, linear in ``log sigma``: the root of
  the chord between ``(log lo, f(lo))`` and ``(log hi, f(hi))``, with the
  ``f`` of an end kept twice in a row halved. Epsilon is close to a power of
  sigma, so this takes a few accountant calls where bisection takes about
  seven.

  Args:
    target_epsilon: The epsilon to spend, > 0.
    delta: The target delta, in (0, 1).
    steps: The number of steps to be taken; >= 0 (0 steps need no noise:
      returns 0.0).
    sampling: ``POISSON`` or ``FIXED_SIZE``.
    sampling_probability: q in (0, 1] (Poisson only); or else give
    batch_size: the (expected) batch size, in [1, dataset_size], and
    dataset_size: the number of private examples, >= 1.
    accountant: ``PLD`` or ``RDP`` (fixed-size sampling always uses RDP).
    tolerance: The relative slack allowed below `target_epsilon`, in (0, 1).
    max_noise_multiplier: The largest sigma considered, > 0.

  Returns:
    sigma with ``target_epsilon (1 - tolerance) <= epsilon(sigma) <=
    target_epsilon``.

  Raises:
    ValueError: on an argument out of range, or when even
      `max_noise_multiplier` spends more than `target_epsilon`.
  """
  sampling = _check_arguments(
      sampling, sampling_probability, batch_size, dataset_size,
      target_epsilon=target_epsilon, delta=delta, steps=steps,
      accountant=accountant, tolerance=tolerance,
      max_noise_multiplier=max_noise_multiplier)
  if steps == 0:
    return 0.0

  def epsilon(sigma: float) -> float:
    return _privacy_spent(sigma, steps, delta, sampling, accountant).epsilon

  lo = hi = min(1.0, max_noise_multiplier)
  while epsilon(hi) > target_epsilon:
    if hi == max_noise_multiplier:
      raise ValueError(
          f"target_epsilon={target_epsilon} cannot be reached: even "
          f"noise_multiplier={hi} spends epsilon={epsilon(hi):.3g} at "
          f"delta={delta} in {steps} steps. Take fewer steps, use a smaller "
          "batch (sampling probability), or a larger delta.")
    lo, hi = hi, min(2 * hi, max_noise_multiplier)
  while epsilon(lo) <= target_epsilon:
    lo, hi = lo / 2, lo
  # Illinois regula falsi on f = log(epsilon / goal) against log(sigma).
  goal = (1 - tolerance / 2) * target_epsilon

  def f(sigma: float) -> float:
    return math.log(max(epsilon(sigma), _TINY) / goal)

  f_lo, f_hi = f(lo), f(hi)
  replaced = None
  for _ in range(_MAX_SPLITS):
    if epsilon(hi) >= (1 - tolerance) * target_epsilon:
      break
    sigma = math.exp(
        (math.log(lo) * f_hi - math.log(hi) * f_lo) / (f_hi - f_lo))
    if epsilon(sigma) > target_epsilon:
      if replaced == "lo":
        f_hi /= 2
      lo, f_lo, replaced = sigma, f(sigma), "lo"
    else:
      if replaced == "hi":
        f_lo /= 2
      hi, f_hi, replaced = sigma, f(sigma), "hi"
  return hi
