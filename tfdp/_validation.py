"""Argument checks shared by tfdp's public entry points.

Each helper raises ``ValueError`` with a message that names the argument and
the allowed range, so that bad input is reported once, at the boundary.
"""

import math
from typing import Any, Optional

import numpy as np


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive(name: str, value: Any) -> float:
  """Returns `value` as a float if it is a finite number > 0, else raises."""
  if not _is_number(value) or not math.isfinite(value) or value <= 0:
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
  return float(value)


def check_non_negative(name: str, value: Any) -> float:
  """Returns `value` as a float if it is a finite number >= 0, else raises."""
  if not _is_number(value) or not math.isfinite(value) or value < 0:
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
  return float(value)


def check_positive_int(name: str, value: Any) -> int:
  """Returns `value` if it is an integer >= 1, else raises."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
  """Returns `value` if it is an integer >= 0, else raises."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
  return int(value)


def check_open_unit_interval(name: str, value: Any) -> float:
  """Returns `value` if 0 < value < 1, else raises."""
  if not _is_number(value) or not 0 < value < 1:
    raise ValueError(f"{name} must be in the open interval (0, 1), got {value!r}")
  return float(value)


def check_probability(name: str, value: Any) -> float:
  """Returns `value` if 0 < value <= 1, else raises."""
  if not _is_number(value) or not 0 < value <= 1:
    raise ValueError(f"{name} must be in (0, 1], got {value!r}")
  return float(value)


def check_choice(name: str, value: Any, choices) -> Any:
  """Returns `value` if it is one of `choices`, else raises."""
  if value not in choices:
    allowed = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
  return value


def check_optional_positive(name: str, value: Optional[Any]) -> Optional[float]:
  """Like `check_positive`, but lets None through."""
  return None if value is None else check_positive(name, value)


def check_float_batch(name: str, value: Any, min_rank: int = 1):
  """`value` as a non-empty float32 numpy batch [N, ...] of rank >= min_rank.

  Raises:
    ValueError: naming `name`, for non-floating or empty input, or too low a
      rank.
  """
  array = np.asarray(value)
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(f"{name} must hold floating-point inputs, got "
                     f"{array.dtype}")
  if array.ndim < min_rank or len(array) == 0:
    raise ValueError(f"{name} must be a non-empty batch [N, ...], got shape "
                     f"{array.shape}")
  return array.astype(np.float32)
