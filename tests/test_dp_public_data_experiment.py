"""experiments.dp_public_data end to end on digits: rows, accounting, resume."""

import json
import pathlib
import subprocess
import sys

from tfdp import privacy

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ("--epsilons=2", "--seeds=1", "--epochs=1", "--batch_size=64",
        "--gan_steps=20", "--synthetic_size=100", "--warmup_epochs=1",
        "--public_examples=100", "--augment_padding=1",
        "--public_batch_size=16", "--verbose=0")


def _run(tmp_path, *args):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.dp_public_data", *TINY,
       f"--output_dir={tmp_path}", *args],
      capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_every_row_runs_within_its_budget_and_resume_skips_done_runs(
    tmp_path):
  rows = "dpsgd,warmup_synthetic,augmult4,dope,mirror,ema"
  result = _run(tmp_path, f"--rows={rows}")
  (path,) = tmp_path.glob("dp_public_data/*/results.json")
  results = json.loads(path.read_text())
  settings = results["settings"]
  # digits: 1,437 training images less 10% validation, less 100 public.
  assert settings["public"] == 100 and settings["test"] == 360
  assert settings["private"] + settings["public"] + settings[
      "validation"] == 1437
  runs = results["runs"]
  assert [r["row"] for r in runs] == rows.split(",")
  for run in runs:
    # The noise was calibrated to spend epsilon 2 in the steps taken.
    spent = privacy.compute_epsilon(
        run["noise_multiplier"], run["steps"], 1e-5, batch_size=64,
        dataset_size=settings["private"])
    assert abs(spent.epsilon - run["epsilon"]) < 1e-9
    assert 1.9 < run["epsilon"] <= 2.0
    assert 0 <= run["test_accuracy"] <= 1
  assert (path.parent / "synthetic-0.npz").exists()
  assert "| dpsgd | 2 | 1 |" in result.stdout
  assert "best on validation is" in result.stdout

  # A killed run resumes: finished runs are read back, not trained again.
  path.unlink()
  resumed = _run(tmp_path, f"--rows={rows}", "--resume")
  assert "eps=2 seed=0" not in resumed.stdout  # nothing was retrained
  assert json.loads(path.read_text())["runs"] == runs
