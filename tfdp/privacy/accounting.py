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

Guarded PLD accounting. dp_accounting's PLD accountant puts the privacy loss
of one step on a grid of step ``1e-4`` (its default
``value_discretization_interval``), some ``1 / (2 sigma^2) + 10 / sigma`` wide
(twice that at q = 1), and the loss of ``T`` steps, composed by FFT, on a grid
as wide as its Chernoff bound: small noise multipliers or many steps would
need billions of points (sigma = 1e-3: 38 GiB). tfdp sizes both grids first
(one step exactly, from dp_accounting's connect-the-dots bounds; the
composition by dp_accounting's own Chernoff bound, on a 1,024-point grid) and

* within 2^19 points for one step and 2^24 for the composition (at most about
  1 GB and 20 s on 2 cores; e.g. sigma >= 0.5 with q <= 0.05, or sigma >= 1
  with q <= 0.125, up to 1e5 steps, and sigma >= 0.5 at any q up to 1,500
  steps; `_guarded_pld_epsilon` has the details) runs the PLD accountant
  with its defaults: results unchanged;
* beyond, coarsens the interval until the grids fit in 2^16 and 2^22 points
  (a few seconds, ~0.3 GB; dp_accounting's pessimistic PLD is an upper bound
  at any interval), runs the RDP accountant too, and reports the smaller of
  the two upper bounds, RDP alone where a grid that fits would be too coarse
  (intervals over 100, or 1,000 points or fewer per step). The result's
  `PrivacySpent.accountant` names the accountant that produced it; one warning
  is logged per noise multiplier and sampling probability.

Noise multipliers in (0, 1e-100) and more than 1e18 steps are refused with a
ValueError: dp_accounting's RDP accountant does not terminate below
(``1 / sigma^2`` overflows) and counts steps in int64 beyond.
"""

import dataclasses
import functools
import math
from typing import Optional, Tuple

from absl import logging
import dp_accounting
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.pld import privacy_loss_mechanism
import numpy as np

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

# The accounted range. Below ~1e-154 dp_accounting's RDP accountant overflows
# 1 / sigma^2 and loops forever; it counts steps in int64 (up to 9.2e18).
MIN_NOISE_MULTIPLIER = 1e-100
MAX_STEPS = 10**18


def _check_noise_multiplier(name: str, value) -> float:
  """`value` if it is 0 (no noise) or finite and >= MIN_NOISE_MULTIPLIER."""
  value = _validation.check_non_negative(name, value)
  if 0 < value < MIN_NOISE_MULTIPLIER:
    raise ValueError(
        f"{name} must be 0 (no noise) or >= {MIN_NOISE_MULTIPLIER:g} to be "
        f"accounted, got {value!r}: dp_accounting's RDP accountant "
        "overflows below that (epsilon would exceed 1e200 anyway)")
  return value


def _check_optional_noise_multiplier(name: str, value) -> Optional[float]:
  """None, or a noise multiplier `_check_noise_multiplier` accepts."""
  return None if value is None else _check_noise_multiplier(name, value)


def _check_steps(name: str, value) -> int:
  """`value` if it is an integer in [0, MAX_STEPS]."""
  value = _validation.check_non_negative_int(name, value)
  if value > MAX_STEPS:
    raise ValueError(f"{name} must be <= {MAX_STEPS:.0e} to be accounted, got "
                     f"{value!r}: dp_accounting counts steps in int64")
  return value


# The check for each scalar argument a public entry point may take.
_SCALAR_CHECKS = {
    "noise_multiplier": _check_noise_multiplier,
    "release_noise_multiplier": _check_optional_noise_multiplier,
    "steps": _check_steps,
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

# The PLD guard (module docstring). dp_accounting's default
# value_discretization_interval, and tail_mass_truncation of PLD
# self-composition.
_PLD_INTERVAL = 1e-4
_TAIL_MASS_TRUNCATION = 1e-15
# Grid sizes (points) within which dp_accounting's defaults are used unchanged:
# building a single-step grid costs ~30 us a point, composing ~60 bytes and
# ~0.5 us a point (at most ~1 GB and ~20 s, measured on 2 cores).
_MAX_DEFAULT_STEP_POINTS = 2**19
_MAX_DEFAULT_COMPOSED_POINTS = 2**24
# Grid sizes of a coarsened PLD beyond them: a few seconds and ~0.3 GB.
_MAX_COARSE_STEP_POINTS = 2**16
_MAX_COARSE_COMPOSED_POINTS = 2**22
# dp_accounting keeps a PMF of up to this many points sparse, and composes a
# sparse PMF of n points T times only after computing the integer n^T: allow
# that up to 2^23 bits (~1.5 s).
_MAX_SPARSE_POINTS = 1000
_MAX_SPARSE_BITS = 2**23
# The coarsest interval: dp_accounting's connect-the-dots PMF takes
# expm1(interval), which overflows past 709.
_MAX_INTERVAL = 100.0
# Points of the grid on which the composed width is estimated, and the factor
# on that estimate (the composed grid was measured up to 1.25 times wider).
_ESTIMATE_POINTS = 2**10
_ESTIMATE_MARGIN = 1.3
# (noise multiplier, q, accountant) of the fallbacks already warned about.
_WARNED = set()


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
    release_noise_multiplier: The noise multiplier of the one Gaussian
      release on the whole dataset composed with the steps, or None.
  """
  epsilon: float
  delta: float
  accountant: str
  sampling: str
  noise_multiplier: float
  steps: int
  sampling_probability: float
  release_noise_multiplier: Optional[float] = None

  def __str__(self) -> str:
    release = ("" if self.release_noise_multiplier is None else
               ", plus one Gaussian release at noise multiplier "
               f"{self.release_noise_multiplier:.3g}")
    return (f"epsilon={self.epsilon:.3g} at delta={self.delta:g} after "
            f"{self.steps} steps ({self.accountant.upper()} accountant, "
            f"{_SAMPLING_NAMES[self.sampling]} sampling "
            f"q={self.sampling_probability:.3g}, noise multiplier "
            f"{self.noise_multiplier:.3g}{release})")


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


@functools.lru_cache(maxsize=64)
def _step_loss_bounds(noise_multiplier: float,
                      q: float) -> Tuple[Tuple[float, float], ...]:
  """The privacy losses spanned by one Poisson-subsampled Gaussian step.

  dp_accounting's connect-the-dots grid for one step spans
  ``[epsilon_lower, epsilon_upper]``, the losses at the two ends of the noise
  truncated to mass ``e^-50``, ``x`` in about ``[-10 sigma - 1, 10 sigma]``.
  With ``L(x) = (-1/2 - x) / sigma^2`` the loss of the Gaussian, in
  ``+-(1/2 + 10 sigma) / sigma^2``, the step's loss is
  ``log(1 - q + q e^L(x))`` (remove) or ``-log(1 - q + q e^-L(x))`` (add):
  for q < 1 each spans about ``1 / (2 sigma^2) + 10 / sigma + log q``, at
  q = 1 ``1 / sigma^2 + 20 / sigma``.

  Returns:
    ``(epsilon_lower, epsilon_upper)`` of the remove and, for q < 1, the add
    PMF (at q = 1 dp_accounting uses the remove PMF alone).
  """
  adjacencies = [privacy_loss_mechanism.AdjacencyType.REMOVE]
  if q < 1:
    adjacencies.append(privacy_loss_mechanism.AdjacencyType.ADD)
  bounds = []
  for adjacency in adjacencies:
    dots = privacy_loss_mechanism.GaussianPrivacyLoss(
        noise_multiplier, sampling_prob=q,
        adjacency_type=adjacency).connect_dots_bounds()
    bounds.append((dots.epsilon_lower, dots.epsilon_upper))
  return tuple(bounds)


def _step_loss_width(noise_multiplier: float, q: float) -> float:
  """The widest span of one step's PMFs, ``epsilon_upper - epsilon_lower``."""
  return max(upper - lower
             for lower, upper in _step_loss_bounds(noise_multiplier, q))


def _step_points(noise_multiplier: float, q: float,
                 interval: float) -> Tuple[int, ...]:
  """The number of points of each of one step's PMFs at `interval`.

  dp_accounting puts a PMF on the integers ``floor(epsilon_lower / d)`` to
  ``ceil(epsilon_upper / d)``, all kept: a sparse PMF (a dict) up to
  `_MAX_SPARSE_POINTS` points, a dense array beyond.
  """
  return tuple(
      math.ceil(upper / interval) - math.floor(lower / interval) + 1
      for lower, upper in _step_loss_bounds(noise_multiplier, q))


@functools.lru_cache(maxsize=64)
def _coarse_step_pmfs(noise_multiplier: float,
                      q: float) -> Tuple[float, Tuple[np.ndarray, ...]]:
  """One step's PLD on a grid of about `_ESTIMATE_POINTS` points (cached).

  The interval is at least dp_accounting's default and at most
  `_MAX_INTERVAL`: more points for losses wider than ``1024 * 100`` (callers
  ask only up to ``2^16 * 100``).

  Returns:
    The interval, and the probabilities of the remove (and add) PMFs.
  """
  width = _step_loss_width(noise_multiplier, q)
  interval = min(max(_PLD_INTERVAL, width / _ESTIMATE_POINTS), _MAX_INTERVAL)
  # Privacy buckets, which cannot fail as connect-the-dots can (see
  # `_coarse_pld_epsilon`); its grid widths agree within 3%.
  pld = privacy_loss_distribution.from_gaussian_mechanism(
      noise_multiplier, value_discretization_interval=interval,
      sampling_prob=q, use_connect_dots=False)
  # dp_accounting (0.4.3, pinned) keeps the PMFs private.
  # pylint: disable=protected-access
  pmfs = [pld._pmf_remove] if pld._symmetric else [pld._pmf_remove,
                                                     pld._pmf_add]
  probs = tuple(pmf.to_dense_pmf()._probs for pmf in pmfs)
  # pylint: enable=protected-access
  return interval, probs


def _composed_loss_width(noise_multiplier: float, q: float,
                         steps: int) -> float:
  """Estimated width of the privacy losses of `steps` composed steps.

  dp_accounting composes a step's PMF ``p`` (``n`` points) ``T`` times by FFT
  on the grid points ``[lo, hi]`` outside which the composition has mass
  <= ``tau = 1e-15``, from the Chernoff bound at orders ``t`` in
  ``{-20..-1, 1..20} / n``: ``hi <= (T log sum_i p_i e^(t i) + log(2 / tau))
  / t`` for ``t > 0``, likewise ``lo`` for ``t < 0``. The orders are fixed in
  loss units (``t / interval = k / width``), so the same bound on a coarse
  grid estimates the width ``(hi - lo) * interval`` of the fine one (measured
  up to 1.25 times smaller).
  """
  interval, pmfs = _coarse_step_pmfs(noise_multiplier, q)
  width = 0.0
  for probs in pmfs:
    lo, hi = pld_common.compute_self_convolve_bounds(
        probs, steps, _TAIL_MASS_TRUNCATION)
    width = max(width, (hi - lo + 1) * interval, len(probs) * interval)
  return width


def _pld_epsilon(event: dp_accounting.DpEvent, delta: float,
                 interval: Optional[float] = None) -> float:
  """dp_accounting's PLD epsilon, with its defaults if `interval` is None."""
  if interval is None:
    dp_accountant = dp_accounting.pld.PLDAccountant()
  else:
    dp_accountant = dp_accounting.pld.PLDAccountant(
        value_discretization_interval=interval)
  dp_accountant.compose(event)
  return float(dp_accountant.get_epsilon(delta))


def _coarse_pld_epsilon(event: dp_accounting.DpEvent, noise_multiplier: float,
                        steps: int, delta: float, q: float,
                        interval: float) -> float:
  """Poisson epsilon of `event` from dp_accounting's PLD at `interval`.

  dp_accounting builds a step's PMF by connect-the-dots, which refuses a
  delta(epsilon) that is not non-increasing: for a small sigma, delta is flat
  at about q over a range of epsilons and its rounding noise (~1e-17) trips
  that check. The PMF then comes from the privacy-buckets algorithm instead,
  pessimistic as well (each loss rounded up to the grid): an upper bound,
  slightly looser.

  Returns:
    The epsilon (infinite if the privacy-buckets PMF fails too).
  """
  try:
    return _pld_epsilon(event, delta, interval)
  except ValueError:
    pass
  try:
    pld = privacy_loss_distribution.from_gaussian_mechanism(
        noise_multiplier, value_discretization_interval=interval,
        sampling_prob=q, use_connect_dots=False)
    return float(pld.self_compose(steps).get_epsilon_for_delta(delta))
  except (ValueError, FloatingPointError, OverflowError):
    return math.inf


def _rdp_epsilon(event: dp_accounting.DpEvent, delta: float,
                 sampling: _Sampling) -> float:
  """dp_accounting's RDP epsilon, for the sampler's neighbouring relation."""
  dp_accountant = dp_accounting.rdp.RdpAccountant(
      neighboring_relation=_NEIGHBORING_RELATIONS[sampling.sampling])
  dp_accountant.compose(event)
  return float(dp_accountant.get_epsilon(delta))


def _default_pld_refusal(noise_multiplier: float, steps: int,
                         sampling: _Sampling) -> Tuple[Optional[str], float]:
  """Why dp_accounting's PLD with its defaults is refused here, if it is.

  See `_guarded_pld_epsilon`.

  Returns:
    The reason (None where the defaults fit) and the estimated composed width
    ``wT`` (infinite where no coarse grid fits one step).
  """
  q = sampling.probability
  step_width = _step_loss_width(noise_multiplier, q)
  points = _step_points(noise_multiplier, q, _PLD_INTERVAL)
  if step_width / _MAX_COARSE_STEP_POINTS <= _MAX_INTERVAL:
    composed_width = _ESTIMATE_MARGIN * _composed_loss_width(
        noise_multiplier, q, steps)
  else:  # No PLD grid fits: an interval > 100 already for one step.
    composed_width = math.inf
  composed_points = composed_width / _PLD_INTERVAL
  sparse_bits = max(steps * math.log2(n) if n <= _MAX_SPARSE_POINTS else 0
                    for n in points)
  if sparse_bits > _MAX_SPARSE_BITS:
    return (f"would compute an integer n^T of {sparse_bits:.3g} bits (over "
            "2^23) for its sparse composition"), composed_width
  if (max(points) > _MAX_DEFAULT_STEP_POINTS or
      composed_points > _MAX_DEFAULT_COMPOSED_POINTS):
    return (f"would need privacy-loss grids of {max(points):.3g} points for "
            f"one step and ~{composed_points:.3g} composed (over 2^19 and "
            "2^24)"), composed_width
  return None, composed_width


def _guarded_pld_epsilon(noise_multiplier: float, steps: int, delta: float,
                         sampling: _Sampling) -> Tuple[float, str]:
  """Poisson epsilon from the PLD accountant, in bounded time and memory.

  See the module docstring. With ``w1`` and ``wT`` the widths of the
  single-step and (estimated, times 1.3) composed losses, the grids at
  interval ``d`` have about ``w1 / d`` and ``wT / d`` points, and:

  * at ``d = 1e-4``, ``w1 / d <= 2^19``, ``wT / d <= 2^24`` and, where one
    step's PMF is sparse (<= 1000 points, ``n``), ``T log2(n) <= 2^23``
    (dp_accounting computes the integer ``n^T``): dp_accounting's PLD
    accountant with its defaults;
  * otherwise, or where that fails (`_coarse_pld_epsilon`),
    ``d = max(w1 / 2^16, wT / 2^22)`` and epsilon is ``min(PLD at d, RDP)``,
    both upper bounds. The PLD only where ``d <= 100`` (dp_accounting's
    connect-the-dots overflows ``e^d``) and one step keeps more than 1000
    points at ``d`` (``wT <~ 4096 w1``; coarser grids are loose, and sparse).

  Returns:
    The epsilon and the accountant that produced it, ``PLD`` or ``RDP``.

  Raises:
    ValueError: naming `steps` where neither accountant gives a number.
  """
  q = sampling.probability
  event = _event(noise_multiplier, steps, sampling)
  step_width = _step_loss_width(noise_multiplier, q)
  why, composed_width = _default_pld_refusal(noise_multiplier, steps,
                                             sampling)
  if why is None:
    try:
      return _pld_epsilon(event, delta), PLD
    except ValueError as error:
      why = f"fails ({str(error)[:200]})"
  interval = max(step_width / _MAX_COARSE_STEP_POINTS,
                 composed_width / _MAX_COARSE_COMPOSED_POINTS)
  pld_epsilon = rdp_epsilon = math.inf
  if (interval <= _MAX_INTERVAL and
      min(_step_points(noise_multiplier, q, interval)) > _MAX_SPARSE_POINTS):
    pld_epsilon = _coarse_pld_epsilon(event, noise_multiplier, steps, delta,
                                      q, interval)
  try:
    rdp_epsilon = _rdp_epsilon(event, delta, sampling)
  except ValueError:
    # dp_accounting's RDP of a nearly lossless step (a huge sigma) can come
    # out negative and be refused.
    pass
  if math.isinf(pld_epsilon) and math.isinf(rdp_epsilon):
    raise ValueError(
        f"steps={steps} cannot be accounted with noise_multiplier="
        f"{noise_multiplier:g} and sampling_probability={q:g}: no PLD grid "
        "within the caps (see tfdp.privacy.accounting) resolves it and "
        "dp_accounting's RDP accountant fails numerically; take fewer steps")
  used = RDP if rdp_epsilon < pld_epsilon else PLD
  if (noise_multiplier, q, used) not in _WARNED:
    _WARNED.add((noise_multiplier, q, used))
    if used == PLD:
      instead = ("by the PLD accountant on a coarser grid "
                 f"(value_discretization_interval {interval:.3g}), an upper "
                 "bound on epsilon, slightly looser")
    elif math.isinf(pld_epsilon):
      instead = ("by the RDP accountant, an upper bound on epsilon, looser: "
                 "no PLD grid within the caps resolves it")
    else:
      instead = (f"by the RDP accountant, an upper bound on epsilon "
                 f"({rdp_epsilon:.4g}) below the PLD's on a grid within the "
                 f"caps ({pld_epsilon:.4g})")
    logging.warning(
        "PLD accounting of noise_multiplier=%g, sampling_probability=%g, "
        "steps=%d with dp_accounting's defaults %s; tfdp keeps them for "
        "about noise_multiplier >= 0.5 with q <= 0.05 and up to 1e5 steps "
        "(see tfdp.privacy.accounting). Accounted %s.",
        noise_multiplier, q, steps, why, instead)
  return min(pld_epsilon, rdp_epsilon), used


def _epsilon_with_release(noise_multiplier: float, steps: int, delta: float,
                          sampling: _Sampling, accountant: str,
                          release_noise_multiplier: float) -> Tuple[float, str]:
  """Epsilon of the steps composed with one Gaussian release.

  The event is ``Composed([steps' event, Gaussian(release)])``. PLD (with
  dp_accounting's defaults) where the steps alone fit them
  (`_default_pld_refusal`), else RDP, which composes any two events exactly
  by adding their RDP curves (looser than PLD's epsilon, still an upper
  bound).
  """
  if release_noise_multiplier == 0 or (steps and noise_multiplier == 0):
    return math.inf, accountant
  events = [dp_accounting.GaussianDpEvent(release_noise_multiplier)]
  if steps:
    events.insert(0, _event(noise_multiplier, steps, sampling))
  event = dp_accounting.ComposedDpEvent(events)
  if accountant == PLD and (
      not steps or
      _default_pld_refusal(noise_multiplier, steps, sampling)[0] is None):
    try:
      return _pld_epsilon(event, delta), PLD
    except ValueError:
      pass
  return _rdp_epsilon(event, delta, sampling), RDP


@functools.lru_cache(maxsize=4096)
def _epsilon(noise_multiplier: float, steps: int, delta: float,
             sampling: _Sampling, accountant: str,
             release_noise_multiplier: Optional[float] = None
             ) -> Tuple[float, str]:
  """Epsilon at `delta` after `steps` steps, from dp_accounting (cached).

  No step releases nothing (epsilon 0); steps without noise release the
  exact clipped sums (epsilon infinite). PLD is guarded
  (`_guarded_pld_epsilon`). With `release_noise_multiplier`, the steps are
  composed with that one Gaussian release (`_epsilon_with_release`).

  Returns:
    The epsilon and the accountant that produced it, ``PLD`` or ``RDP``.
  """
  if release_noise_multiplier is not None:
    return _epsilon_with_release(noise_multiplier, steps, delta, sampling,
                                 accountant, release_noise_multiplier)
  if steps == 0:
    return 0.0, accountant
  if noise_multiplier == 0:
    return math.inf, accountant
  if accountant == PLD:
    return _guarded_pld_epsilon(noise_multiplier, steps, delta, sampling)
  return _rdp_epsilon(_event(noise_multiplier, steps, sampling), delta,
                      sampling), RDP


def _privacy_spent(noise_multiplier: float, steps: int, delta: float,
                   sampling: _Sampling, accountant: str,
                   release_noise_multiplier: Optional[float] = None
                   ) -> PrivacySpent:
  """`PrivacySpent` for validated arguments (`steps` checked here)."""
  _check_steps("steps", steps)
  release = (None if release_noise_multiplier is None else
             float(release_noise_multiplier))
  epsilon, accountant = _epsilon(
      float(noise_multiplier), steps, float(delta), sampling,
      _accountant_used(accountant, sampling), release)
  return PrivacySpent(
      epsilon=epsilon,
      delta=float(delta),
      accountant=accountant,
      sampling=sampling.sampling,
      noise_multiplier=float(noise_multiplier),
      steps=steps,
      sampling_probability=sampling.probability,
      release_noise_multiplier=release)


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
      norm C; 0 or >= 1e-100.
    steps: The number of steps; in [0, 1e18].
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
                    accountant: str = PLD,
                    release_noise_multiplier: Optional[float] = None
                    ) -> PrivacySpent:
  """The epsilon at `delta` spent by `steps` DP-SGD steps.

  The event is `dpsgd_event`'s; the epsilon is dp_accounting's PLD accountant
  (with its defaults, guarded: outside the range of the module docstring, a
  coarser PLD or the RDP accountant, whichever bound is smaller) or its RDP
  accountant; the result's `accountant` says which produced it. Fixed-size
  sampling is always accounted with RDP under the replace-one relation;
  Poisson sampling with add/remove-one.
  ``steps == 0`` gives epsilon 0, ``noise_multiplier == 0`` (with steps)
  gives epsilon ``inf``.

  Args:
    noise_multiplier: sigma, the noise standard deviation over the clipping
      norm; 0 or >= 1e-100.
    steps: The number of steps taken; in [0, 1e18].
    delta: The target delta, in (0, 1).
    sampling: ``POISSON`` or ``FIXED_SIZE``.
    sampling_probability: q in (0, 1] (Poisson only); or else give
    batch_size: the (expected) batch size, in [1, dataset_size], and
    dataset_size: the number of private examples, >= 1.
    accountant: ``PLD`` (tighter) or ``RDP``.
    release_noise_multiplier: None, or the noise multiplier z of one more
      Gaussian mechanism on the whole private dataset (noise standard
      deviation over its L2 sensitivity under the sampler's neighbouring
      relation), composed with the steps: e.g. a DP-GAN's mean samples
      (`tfdp.gan.mean_samples`; k releases at z compose to one at
      z / sqrt(k)). 0 or >= 1e-100.

  Returns:
    A `PrivacySpent`.

  Raises:
    ValueError: on an argument out of range.
  """
  sampling = _check_arguments(
      sampling, sampling_probability, batch_size, dataset_size,
      noise_multiplier=noise_multiplier, steps=steps, delta=delta,
      accountant=accountant,
      release_noise_multiplier=release_noise_multiplier)
  return _privacy_spent(noise_multiplier, steps, delta, sampling, accountant,
                        release_noise_multiplier)


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
                               max_noise_multiplier: float = 1000.0,
                               release_noise_multiplier: Optional[float] = None
                               ) -> float:
  """The noise multiplier that spends (about) `target_epsilon` in `steps`.

  epsilon(sigma) (as `compute_epsilon` gives it, guarded: see the module
  docstring) decreases in sigma. The search brackets the solution,
  ``epsilon(lo) > target >= epsilon(hi)``, by doubling or halving sigma from
  1 (not from a tiny sigma: the PLDs of small sigmas cost the most, up to the
  guard's caps), then splits ``[lo, hi]`` until
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
    release_noise_multiplier: None, or the noise multiplier z of one more
      Gaussian mechanism on the whole private dataset (noise standard
      deviation over its L2 sensitivity under the sampler's neighbouring
      relation), composed with the steps, whose cost the steps' sigma is calibrated
      around: e.g. a DP-GAN's mean samples
      (`tfdp.gan.mean_samples`; k releases at z compose to one at
      z / sqrt(k)). 0 or >= 1e-100.

  Returns:
    sigma with ``target_epsilon (1 - tolerance) <= epsilon(sigma) <=
    target_epsilon``; where epsilon jumps over that band (the guard switching
    grid or accountant), one with ``epsilon(sigma) <= target_epsilon``, and a
    logged warning.

  Raises:
    ValueError: on an argument out of range, when even
      `max_noise_multiplier` spends more than `target_epsilon`, or when
      `target_epsilon` is more than ``MIN_NOISE_MULTIPLIER`` spends.
  """
  sampling = _check_arguments(
      sampling, sampling_probability, batch_size, dataset_size,
      target_epsilon=target_epsilon, delta=delta, steps=steps,
      accountant=accountant, tolerance=tolerance,
      max_noise_multiplier=max_noise_multiplier,
      release_noise_multiplier=release_noise_multiplier)
  if release_noise_multiplier is not None:
    release_epsilon = _privacy_spent(0.0, 0, delta, sampling, accountant,
                                     release_noise_multiplier).epsilon
    if release_epsilon >= target_epsilon:
      raise ValueError(
          f"release_noise_multiplier={release_noise_multiplier:g} alone "
          f"spends epsilon={release_epsilon:.3g} at delta={delta}, not below "
          f"target_epsilon={target_epsilon}: no noise on the steps can meet "
          "the target. Add noise to the release (or release less).")
  if steps == 0:
    return 0.0

  def epsilon(sigma: float) -> float:
    return _privacy_spent(sigma, steps, delta, sampling, accountant,
                          release_noise_multiplier).epsilon

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
    if lo / 2 < MIN_NOISE_MULTIPLIER:
      raise ValueError(
          f"target_epsilon={target_epsilon} is too large to calibrate: "
          f"noise_multiplier={lo:g} spends only epsilon={epsilon(lo):.3g} "
          f"at delta={delta} in {steps} steps, and noise multipliers below "
          f"{MIN_NOISE_MULTIPLIER:g} are not accounted")
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
  if epsilon(hi) < (1 - tolerance) * target_epsilon:
    logging.warning(
        "calibrate_noise_multiplier: no noise multiplier found that spends "
        "between %g and target_epsilon=%g in %d splits (epsilon jumps where "
        "the guarded accountant changes grid or accountant, see "
        "tfdp.privacy.accounting); returning %g, which spends %g.",
        (1 - tolerance) * target_epsilon, target_epsilon, _MAX_SPLITS, hi,
        epsilon(hi))
  return hi
