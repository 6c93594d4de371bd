"""The experiments' command lines: --help lists their flags, bad values fail.

A bad value must stop the run when absl parses the flags, before anything
trains, with one line that names the flag and no traceback.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(experiment, *args):
  return subprocess.run(
      [sys.executable, "-m", f"experiments.{experiment}", *args],
      capture_output=True, text=True, cwd=ROOT, timeout=300)


def _help(experiment):
  """The flags that `--help` lists (absl exits 1 after printing help)."""
  result = _run(experiment, "--help")
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return {line.split(":")[0].strip() for line in result.stdout.splitlines()
          if line.startswith("  --")}


def test_quickstart_help_lists_its_flags():
  assert {"--target_epsilon", "--delta", "--l2_norm_clip", "--epochs",
          "--batch_size", "--sampling", "--output_dir", "--verbose"} <= (
              _help("quickstart"))


def test_stobatch_help_lists_shared_flags_and_securesgd_only_its_own():
  assert {"--epsilon_ae", "--kappas", "--gpus", "--steps"} <= (
      _help("stobatch_cifar10"))
  listed = _help("securesgd_tinyimagenet")
  assert {"--target_epsilon", "--epsilon_hgm", "--kappas", "--steps"} <= listed
  assert "--epsilon_ae" not in listed  # StoBatch's, refused there.


def _assert_usage_error(result, line):
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if "FATAL" in l]
  assert errors == [f"FATAL Flags parsing error: {line}"], result.stderr


def test_quickstart_bad_value_is_a_one_line_usage_error():
  _assert_usage_error(_run("quickstart", "--target_epsilon=-1"),
                      "flag --target_epsilon=-1.0: must be a finite number "
                      "> 0")


@pytest.mark.parametrize("flag, line", [
    ("--delta=2", "flag --delta=2.0: must be a finite number in (0, 1)"),
    ("--batch_size=0", "flag --batch_size=0: 0 is not a positive integer"),
    ("--cert_alpha=nan",
     "flag --cert_alpha=nan: must be a finite number in (0, 1)"),
    ("--kappas=0.1,-1",
     "flag --kappas=['0.1', '-1']: items must be finite numbers > 0"),
    ("--noise_multiplier=-0.5",
     "flag --noise_multiplier=-0.5: must be a finite number >= 0"),
])
def test_securesgd_bad_values_are_one_line_usage_errors(flag, line):
  # securesgd_tinyimagenet imports no TensorFlow before main: quick to fail.
  _assert_usage_error(_run("securesgd_tinyimagenet", flag), line)
