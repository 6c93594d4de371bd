"""Tests for tfdp._validation: numpy scalars, bools, messages, finite rows."""

import numpy as np
import pytest

from tfdp import _validation

_FLOAT_CHECKS = [
    _validation.check_positive,
    _validation.check_non_negative,
    _validation.check_open_unit_interval,
    _validation.check_probability,
]
_INT_CHECKS = [
    _validation.check_positive_int,
    _validation.check_non_negative_int,
]


@pytest.mark.parametrize("check", _INT_CHECKS)
@pytest.mark.parametrize("value", [
    64, np.int64(64), np.int32(64), np.uint8(64), np.array(64),
    np.array(64, np.int16),
])
def test_int_checks_accept_numpy_integers_as_python_ints(check, value):
  result = check("batch_size", value)
  assert isinstance(result, int)  # np.int64 is not an int.
  assert result == 64


@pytest.mark.parametrize("check", _FLOAT_CHECKS)
@pytest.mark.parametrize("value", [
    0.5, np.float32(0.5), np.float64(0.5), np.float16(0.5), np.array(0.5),
])
def test_float_checks_accept_numpy_floats_as_python_floats(check, value):
  result = check("rate", value)
  assert type(result) is float  # pylint: disable=unidiomatic-typecheck
  assert result == 0.5


@pytest.mark.parametrize("check", [_validation.check_positive,
                                   _validation.check_non_negative])
@pytest.mark.parametrize("value", [3, np.int64(3), np.array(3, np.int8)])
def test_float_checks_accept_integers(check, value):
  result = check("epsilon", value)
  assert type(result) is float  # pylint: disable=unidiomatic-typecheck
  assert result == 3.0


@pytest.mark.parametrize("check", _INT_CHECKS + _FLOAT_CHECKS)
@pytest.mark.parametrize("value, shown", [
    (True, r"True \(bool\)"),
    (np.bool_(True), r"True \(bool_\)"),
    (np.array(True), r"array\(True\) \(bool array of shape \(\)\)"),
])
def test_bools_are_refused(check, value, shown):
  with pytest.raises(ValueError, match=f"^flag must be .*, got {shown}$"):
    check("flag", value)


@pytest.mark.parametrize("check, value, match", [
    (_validation.check_positive_int, 64.5,
     r"batch_size must be an integer >= 1, got 64.5 \(float\)$"),
    (_validation.check_positive_int, np.float32(64.0),
     r"batch_size must be an integer >= 1, got 64.0 \(float32\)$"),
    (_validation.check_positive_int, np.int64(0),
     r"batch_size must be an integer >= 1, got 0 \(int64\)$"),
    (_validation.check_non_negative_int, -1,
     r"batch_size must be an integer >= 0, got -1 \(int\)$"),
    (_validation.check_positive_int, "64",
     r"batch_size must be an integer >= 1, got '64' \(str\)$"),
    (_validation.check_positive_int, np.array([64]),
     r"got array\(\[64\]\) \(int64 array of shape \(1,\)\)$"),
    (_validation.check_positive, np.float32(np.nan),
     r"batch_size must be a finite number > 0, got nan \(float32\)$"),
    (_validation.check_positive, np.float64(-2.0),
     r"batch_size must be a finite number > 0, got -2.0 \(float64\)$"),
    (_validation.check_non_negative, float("inf"),
     r"batch_size must be a finite number >= 0, got inf \(float\)$"),
    (_validation.check_open_unit_interval, np.float64(1.0),
     r"batch_size must be in the open interval \(0, 1\), got 1.0 "
     r"\(float64\)$"),
    (_validation.check_probability, None,
     r"batch_size must be in \(0, 1\], got None \(NoneType\)$"),
])
def test_refusals_name_the_argument_range_value_and_type(check, value, match):
  with pytest.raises(ValueError, match=match):
    check("batch_size", value)


def test_optional_positive_lets_none_through_and_converts_numpy():
  assert _validation.check_optional_positive("scale", None) is None
  result = _validation.check_optional_positive("scale", np.float32(2.0))
  assert type(result) is float  # pylint: disable=unidiomatic-typecheck


@pytest.mark.parametrize("array", [
    np.zeros((5, 3), np.float32),
    np.arange(15).reshape(5, 3),
    np.array(["a", "b"]),
    np.zeros((0, 3), np.float32),
    [[1.0, 2.0], [3.0, 4.0]],
])
def test_finite_rows_passes_finite_or_non_float_data(array):
  _validation.check_finite_rows("x", array)


@pytest.mark.parametrize("chunk_elements", [1, 7, 1 << 22])
def test_finite_rows_counts_bad_rows_across_chunks(monkeypatch,
                                                   chunk_elements):
  monkeypatch.setattr(_validation, "_FINITE_CHUNK_ELEMENTS", chunk_elements)
  x = np.zeros((20, 2, 3), np.float16)
  x[6, 1, 2] = np.inf
  x[11, 0, 0] = -np.inf
  x[19] = np.nan
  with pytest.raises(
      ValueError, match=r"^images has 3 of 20 rows with NaN or infinite "
      r"values, the first at row 6: drop or impute those examples"):
    _validation.check_finite_rows("images", x)
