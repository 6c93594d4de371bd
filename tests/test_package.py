"""Importing tfdp is quiet, light, and keeps the layering."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEAVY_OPTIONAL = ("keras_cv", "cleverhans", "tensorflow_privacy",
                  "tensorflow_datasets")


def _stderr_of(code, env):
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=env, cwd=ROOT, check=True)
  return result.stdout, result.stderr


def _without_timestamps(lines):
  # absl's C++ log lines (TensorFlow >= 2.18) start with a time and thread.
  return [re.sub(r"^I\d{4} [\d:.]+\s+\d+ ", "", line) for line in lines]


def test_import_prints_nothing_and_skips_heavy_optional_packages():
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  stdout, stderr = _stderr_of(
      "import sys, tfdp; "
      f"print([m for m in {HEAVY_OPTIONAL!r} if m in sys.modules])", env)
  assert stdout.strip() == "[]"
  # Whatever TensorFlow itself logs at import at the level tfdp sets (the
  # 2.15 wheel's three cuDNN/cuFFT/cuBLAS errors; the C++ start-up lines of
  # 2.21, which no log level hides) is not tfdp's; anything else is.
  _, tensorflow_alone = _stderr_of(
      "import tensorflow", dict(env, TF_CPP_MIN_LOG_LEVEL="2"))
  forced = re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory")
  expected = set(_without_timestamps(tensorflow_alone.splitlines()))
  assert [line for line in _without_timestamps(stderr.splitlines())
          if not forced.search(line) and line not in expected] == []


def test_library_has_no_prints_flags_or_upward_imports():
  offenders = []
  for path in (ROOT / "tfdp").rglob("*.py"):
    text = path.read_text()
    if re.search(r"^\s*print\(", text, flags=re.M):
      offenders.append(f"{path}: print")
    if re.search(r"^\s*(from|import) (absl\.flags|absl import flags|"
                 r"flags|experiments)\b", text, flags=re.M):
      offenders.append(f"{path}: imports flags or experiments")
  assert not offenders
