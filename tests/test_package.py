"""Importing tfdp is quiet, light, and keeps the layering."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEAVY_OPTIONAL = ("keras_cv", "cleverhans", "tensorflow_privacy",
                  "tensorflow_datasets")


def test_import_prints_nothing_and_skips_heavy_optional_packages():
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  code = ("import sys, tfdp; "
          f"print([m for m in {HEAVY_OPTIONAL!r} if m in sys.modules])")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=env, cwd=ROOT, check=True)
  assert result.stdout.strip() == "[]"
  # TensorFlow 2.15's pip wheel logs these three errors at import whatever
  # the log level below 3 (a known TF bug); anything else is tfdp's noise.
  forced = re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory")
  assert [line for line in result.stderr.splitlines()
          if not forced.search(line)] == []


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
