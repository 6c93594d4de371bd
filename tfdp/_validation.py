"""Argument checks shared by tfdp's public entry points.

Each helper raises ``ValueError`` with a message that names the argument, the
allowed range and the value refused with its type, so that bad input is
reported once, at the boundary. Numbers may be Python or numpy scalars (or
0-d numpy arrays); the helpers return plain Python ints and floats. Bools are
refused wherever a number is expected.
"""

import math
from typing import Any, Optional, Union

import numpy as np

# Elements that `check_finite_rows` checks at a time: bounds its scratch memory.
_FINITE_CHUNK_ELEMENTS = 1 << 22


def _describe(value: Any) -> str:
  """`value` for an error message, with its type: "64.5 (float)"."""
  if isinstance(value, np.ndarray):
    kind = f"{value.dtype} array of shape {value.shape}"
  else:
    kind = type(value).__name__
  return f"{value!r} ({kind})"


def _as_scalar(value: Any) -> Any:
  """A 0-d numpy array as its numpy scalar; anything else unchanged."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return value[()]
  return value


def _as_int(value: Any) -> Optional[int]:
  """`value` as a Python int if it is a Python or numpy integer, else None."""
  value = _as_scalar(value)
  if isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, (int, np.integer)):
    return int(value)
  return None


def _as_number(value: Any) -> Optional[Union[int, float]]:
  """`value` as a Python int or float if it is a real number, else None."""
  as_int = _as_int(value)
  if as_int is not None:
    return as_int
  value = _as_scalar(value)
  if isinstance(value, (float, np.floating)):
    return float(value)
  return None


def check_positive(name: str, value: Any) -> float:
  """Returns `value` as a float if it is a finite number > 0, else raises."""
  number = _as_number(value)
  if number is None or not math.isfinite(number) or number <= 0:
    raise ValueError(
        f"{name} must be a finite number > 0, got {_describe(value)}")
  return float(number)


def check_non_negative(name: str, value: Any) -> float:
  """Returns `value` as a float if it is a finite number >= 0, else raises."""
  number = _as_number(value)
  if number is None or not math.isfinite(number) or number < 0:
    raise ValueError(
        f"{name} must be a finite number >= 0, got {_describe(value)}")
  return float(number)


def check_positive_int(name: str, value: Any) -> int:
  """Returns `value` as an int if it is an integer >= 1, else raises."""
  number = _as_int(value)
  if number is None or number < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {_describe(value)}")
  return number


def check_non_negative_int(name: str, value: Any) -> int:
  """Returns `value` as an int if it is an integer >= 0, else raises."""
  number = _as_int(value)
  if number is None or number < 0:
    raise ValueError(f"{name} must be an integer >= 0, got {_describe(value)}")
  return number


def check_open_unit_interval(name: str, value: Any) -> float:
  """Returns `value` as a float if 0 < value < 1, else raises."""
  number = _as_number(value)
  if number is None or not 0 < number < 1:
    raise ValueError(f"{name} must be in the open interval (0, 1), got "
                     f"{_describe(value)}")
  return float(number)


def check_probability(name: str, value: Any) -> float:
  """Returns `value` as a float if 0 < value <= 1, else raises."""
  number = _as_number(value)
  if number is None or not 0 < number <= 1:
    raise ValueError(f"{name} must be in (0, 1], got {_describe(value)}")
  return float(number)


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


def check_finite_rows(name: str, array: Any) -> None:
  """Raises if a floating-point batch [N, ...] holds a NaN or an infinity.

  Arrays of other dtypes (integers, uint8 images, strings) pass unchecked.
  The rows are checked a chunk at a time, so the scratch memory stays small
  whatever N.

  Args:
    name: the argument's name, for the message.
    array: the batch, first axis N (one row per example).

  Raises:
    ValueError: naming `name`, how many rows hold a NaN or an infinity and the
      first of them, and the fix.
  """
  array = np.asarray(array)
  if (array.ndim == 0 or array.size == 0
      or not np.issubdtype(array.dtype, np.floating)):
    return
  n = len(array)
  row_size = array.size // n
  chunk = max(1, _FINITE_CHUNK_ELEMENTS // row_size)
  bad = np.concatenate([
      start + np.flatnonzero(~np.isfinite(
          array[start:start + chunk].reshape(-1, row_size)).all(axis=1))
      for start in range(0, n, chunk)])
  if bad.size:
    raise ValueError(
        f"{name} has {bad.size} of {n} rows with NaN or infinite values, the "
        f"first at row {bad[0]}: drop or impute those examples first (one "
        "such example makes every update NaN while the privacy budget is "
        "still spent)")
