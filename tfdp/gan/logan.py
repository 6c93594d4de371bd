"""LOGAN's white-box membership attack on a GAN discriminator.

A discriminator D trained on private images tends to score its own training
images ("members") higher than unseen images of the same distribution. The
attack (Hayes et al., PoPETs 2019) draws a candidate set of
``num_candidates`` images of which a fraction ``member_fraction`` are
members, ranks them by D's score and reports

    success = #{members among the top_k ranked} / top_k,

with ``top_k = member_fraction * num_candidates`` by default (100 of 1,000,
10 % members: chance is 0.1). Repeated over independent candidate sets, the
mean and its spread are reported. Ties are broken at random, so a score
that ignores its input scores chance and not the order of the inputs.

Under chance (a score independent of membership) the member count in the
top k of one candidate set is hypergeometric(N = num_candidates,
K = members, n = top_k). `LoganResult.chance_std` is that success's
standard deviation over sqrt(repeats): the spread of the mean for
independent repeats. Repeats drawn from pools not much larger than one
candidate set share most of their images (and their scores), so they are
correlated and their mean spreads more.

Example:

  import numpy as np
  from tfdp import gan

  members = np.random.default_rng(0).normal(size=(200, 4))
  non_members = np.random.default_rng(1).normal(size=(2000, 4))
  # A discriminator that memorised its members: minus the distance to them.
  score = lambda x: -np.min(
      np.linalg.norm(x[:, None] - members[None], axis=-1), axis=1)
  result = gan.success_rate(score, members, non_members, repeats=5)
  assert result.mean == 1.0
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import stats

from tfdp import _validation


@dataclasses.dataclass(frozen=True)
class LoganResult:
  """The attack's outcome.

  Attributes:
    rates: Success per repeat (members in the top k over k).
    members_in_top: Members in the top k, per repeat.
    top_k: k.
    num_candidates: Candidates per repeat.
    num_members: Members among them.
    chance: The expected success of a membership-blind score, K / N.
    chance_std: Standard deviation of `mean` for a membership-blind score
      over independent repeats (hypergeometric std / sqrt(repeats)).
  """
  rates: List[float]
  members_in_top: List[int]
  top_k: int
  num_candidates: int
  num_members: int
  chance: float
  chance_std: float

  @property
  def mean(self) -> float:
    """The mean success over the repeats."""
    return float(np.mean(self.rates))

  @property
  def std(self) -> float:
    """The standard deviation of the success over the repeats."""
    return float(np.std(self.rates))

  def as_dict(self) -> Dict[str, Any]:
    """The fields, the mean ("success_rate"), std and repeats: JSON-able."""
    return {**dataclasses.asdict(self), "success_rate": self.mean,
            "std": self.std, "repeats": len(self.rates)}


def success_rate(score_fn: Callable[[np.ndarray], Any], members: Any,
                 non_members: Any, *, num_candidates: int = 1000,
                 member_fraction: float = 0.1,
                 top_k: Optional[int] = None,
                 repeats: int = 10, seed: int = 0,
                 batch_size: int = 1000) -> LoganResult:
  """LOGAN's success rate of `score_fn` (higher score: "member").

  Args:
    score_fn: Maps images [B, ...] to one score per image [B] (or [B, 1]),
      e.g. a discriminator's logit of "real". Where `members` and
      `non_members` are tuples (images, labels), it is called with the
      matching slices of each, ``score_fn(images, labels)`` (a conditional
      discriminator).
    members: The discriminator's training images [M, ...], or a tuple of
      arrays of M rows each (images, labels); each repeat draws
      ``round(member_fraction * num_candidates)`` of them without
      replacement.
    non_members: Images of the same distribution it never saw [N, ...].
    num_candidates: Candidates per repeat, >= 2.
    member_fraction: Fraction of members among them, in (0, 1).
    top_k: How many top-ranked candidates count; default the number of
      members (so that a perfect attack scores 1).
    repeats: Independent candidate sets, >= 1.
    seed: Seeds the candidate draws and the tie-breaking.
    batch_size: Images per call of `score_fn`.

  Returns:
    A `LoganResult`.

  Raises:
    ValueError: on an argument out of range, too few members or
      non-members for one candidate set, or scores of the wrong shape.
  """
  num_candidates = _validation.check_positive_int("num_candidates",
                                                  num_candidates)
  if num_candidates < 2:
    raise ValueError(f"num_candidates must be >= 2, got {num_candidates}")
  member_fraction = _validation.check_open_unit_interval("member_fraction",
                                                         member_fraction)
  repeats = _validation.check_positive_int("repeats", repeats)
  seed = _validation.check_non_negative_int("seed", seed)
  batch_size = _validation.check_positive_int("batch_size", batch_size)
  num_members = int(round(member_fraction * num_candidates))
  if not 1 <= num_members < num_candidates:
    raise ValueError(
        f"member_fraction * num_candidates must round to between 1 and "
        f"num_candidates - 1, got {member_fraction} * {num_candidates}")
  top_k = num_members if top_k is None else _validation.check_positive_int(
      "top_k", top_k)
  if top_k > num_candidates:
    raise ValueError(f"top_k must be <= num_candidates ({num_candidates}), "
                     f"got {top_k}")
  members = _as_arrays(members)
  non_members = _as_arrays(non_members)
  if _length(members) < num_members:
    raise ValueError(f"members must hold at least {num_members} images "
                     f"(member_fraction * num_candidates), got "
                     f"{_length(members)}")
  if _length(non_members) < num_candidates - num_members:
    raise ValueError(f"non_members must hold at least "
                     f"{num_candidates - num_members} images, got "
                     f"{_length(non_members)}")
  member_shapes = [a.shape[1:] for a in members]
  non_member_shapes = [a.shape[1:] for a in non_members]
  if member_shapes != non_member_shapes:
    raise ValueError(f"members and non_members must have the same image "
                     f"shape, got {member_shapes} and {non_member_shapes}")

  member_scores = _scores(score_fn, members, batch_size)
  non_member_scores = _scores(score_fn, non_members, batch_size)
  rng = np.random.default_rng(seed)
  counts = []
  for _ in range(repeats):
    chosen_members = rng.choice(_length(members), num_members, replace=False)
    chosen_others = rng.choice(_length(non_members),
                               num_candidates - num_members, replace=False)
    scores = np.concatenate([member_scores[chosen_members],
                             non_member_scores[chosen_others]])
    is_member = np.arange(num_candidates) < num_members
    # Highest score first; ties in random order (lexsort: last key first).
    order = np.lexsort((rng.random(num_candidates), -scores))
    counts.append(int(np.sum(is_member[order[:top_k]])))
  chance_std = stats.hypergeom(num_candidates, num_members, top_k).std()
  return LoganResult(
      rates=[c / top_k for c in counts], members_in_top=counts, top_k=top_k,
      num_candidates=num_candidates, num_members=num_members,
      chance=num_members / num_candidates,
      chance_std=float(chance_std / top_k / np.sqrt(repeats)))


def _as_arrays(value: Any) -> Tuple[np.ndarray, ...]:
  """Images, or a tuple such as (images, labels), as a tuple of arrays."""
  parts = tuple(value) if isinstance(value, tuple) else (value,)
  arrays = tuple(np.asarray(part) for part in parts)
  if len({len(a) for a in arrays}) != 1:
    raise ValueError(f"the arrays of a (images, labels) tuple must have the "
                     f"same length, got {[len(a) for a in arrays]}")
  return arrays


def _length(arrays: Tuple[np.ndarray, ...]) -> int:
  return len(arrays[0])


def _scores(score_fn, arrays: Tuple[np.ndarray, ...],
            batch_size: int) -> np.ndarray:
  parts = []
  for start in range(0, _length(arrays), batch_size):
    batch = [a[start:start + batch_size] for a in arrays]
    size = len(batch[0])
    score = np.asarray(score_fn(*batch), np.float64)
    if score.shape not in ((size,), (size, 1)):
      raise ValueError(f"score_fn must return one score per image, shape "
                       f"[{size}] or [{size}, 1], got {score.shape}")
    parts.append(score.reshape(-1))
  scores = np.concatenate(parts)
  if not np.all(np.isfinite(scores)):
    raise ValueError("score_fn returned a non-finite score")
  return scores


__all__ = ["LoganResult", "success_rate"]
