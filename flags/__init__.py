"""Shared absl flag definitions for the experiments.

Importing a module here defines its flags once; experiments import the groups
they use, e.g. ``from flags import privacy as privacy_flags``, and call
`adopt_key_flags` once so that their --help lists them (absl's --help shows
the main module's key flags only).

Flag values are checked when absl parses the command line, before an
experiment's main runs, so a bad value ends with one line that names the flag
(``FATAL Flags parsing error: flag --delta=2.0: must be a finite number in
(0, 1)``) rather than a traceback: integer flags by absl's own bounds
(``lower_bound=1``, which --help shows as "a positive integer"), float flags
and lists of numbers by `check_range`, which also refuses NaN and infinity.
"""

import math
import types
from typing import Callable, Iterable, Optional, Union

from absl import flags

# The helpers below declare key flags for the module that calls them.
flags.disclaim_key_flags()

_Number = Union[int, float]


def adopt_key_flags(*modules: types.ModuleType,
                    exclude: Iterable[str] = ()) -> None:
  """Lists the flags of `modules` in the calling module's --help.

  Call it once, at the top level of an experiment, with each flags module
  it imports (or each experiment module whose flags it shares).

  Args:
    *modules: modules that define or adopt flags.
    exclude: names of flags that the caller does not use, left out.
  """
  excluded = set(exclude)
  for module in modules:
    for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
      if flag.name not in excluded:
        flags.declare_key_flag(flag.name)


def _range_text(above: Optional[_Number], at_least: Optional[_Number],
                below: Optional[_Number], at_most: Optional[_Number]) -> str:
  """The allowed range in words: "> 0", "in (0, 1]", "in [0, 1)"."""
  low, high = (above if at_least is None else at_least,
               below if at_most is None else at_most)
  if high is None:
    return f"{'>' if at_least is None else '>='} {low:g}"
  if low is None:
    return f"{'<' if at_most is None else '<='} {high:g}"
  return (f"in {'(' if at_least is None else '['}{low:g}, "
          f"{high:g}{')' if at_most is None else ']'}")


def check_range(holder: flags.FlagHolder,
                *,
                above: Optional[_Number] = None,
                at_least: Optional[_Number] = None,
                below: Optional[_Number] = None,
                at_most: Optional[_Number] = None,
                number: Callable[[str], _Number] = float) -> None:
  """Refuses, when the flags are parsed, a value of `holder` out of range.

  The value must be a finite number within the bounds given (each may be
  omitted); an unset flag (None) passes. For a list flag, each item must be
  such a number, written as `number` (float or int) parses it.

  Args:
    holder: the flag, as its DEFINE_* returned it.
    above: exclusive lower bound.
    at_least: inclusive lower bound.
    below: exclusive upper bound.
    at_most: inclusive upper bound.
    number: how to read the items of a list flag: float or int.
  """
  allowed = _range_text(above, at_least, below, at_most)

  def in_range(value) -> bool:
    try:
      value = number(value)
    except (TypeError, ValueError):
      return False
    return (math.isfinite(value)
            and (above is None or value > above)
            and (at_least is None or value >= at_least)
            and (below is None or value < below)
            and (at_most is None or value <= at_most))

  if isinstance(flags.FLAGS[holder.name].parser, flags.BaseListParser):
    kind = "integers" if number is int else "finite numbers"
    flags.register_validator(
        holder, lambda values: values is None or all(map(in_range, values)),
        message=f"items must be {kind} {allowed}")
  else:
    flags.register_validator(
        holder, lambda value: value is None or in_range(value),
        message=f"must be a finite number {allowed}")
