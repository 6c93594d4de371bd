"""The main job runs end to end and reports what it spent."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_short_run(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.quickstart", "--epochs=3",
       "--target_epsilon=1.0", f"--output_dir={tmp_path}", "--verbose=0"],
      capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  (results_file,) = (tmp_path / "quickstart").glob("*/results.json")
  results = json.loads(results_file.read_text())
  assert 0.9 <= results["epsilon"] <= 1.0   # calibrated to the planned steps
  assert results["steps"] == 3 * round(1437 / 64)
  assert results["accountant"] == "pld"
  assert "| test_accuracy |" in result.stdout
  assert list((results_file.parent / "privacy").glob("events.*"))
