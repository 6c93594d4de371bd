"""The DP BatchNorm + PGD experiment runs end to end on digits, tiny sizes."""

import json
import math
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tiny_sweep_with_and_without_adversarial_training(tmp_path):
  command = [
      sys.executable, "-m", "experiments.dp_bn_robust", "--sweep",
      "--sweep_norms=public_batch", "--noise_multipliers=1.0",
      "--seeds=0", "--compare_robust", "--epochs=1", "--batch_size=256",
      "--public_size=16", "--pgd_steps=2", "--eval_pgd_steps=2",
      "--eval_size=40", f"--results_dir={tmp_path}"]
  result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  first = json.loads((tmp_path / "results.json").read_text())
  # --resume keeps the finished configurations (runs.jsonl): nothing retrains.
  result = subprocess.run(command + ["--resume"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / "results.json").read_text())["runs"] == (
      first["runs"])

  results = json.loads((tmp_path / "results.json").read_text())
  settings = results["settings"]
  # digits: 1437 training images, 16 of them public, the rest private.
  assert settings["private_examples"] == 1437 - 16
  assert settings["public_examples"] == 16
  assert settings["robust_eval_examples"] == 40
  runs = results["runs"]
  assert [(r["norm"], r["robust"]) for r in runs] == [
      ("public_batch", False), ("public_batch", True)]
  for run in runs:
    assert run["steps"] == round(1421 / 256)
    assert 0 < run["epsilon"] < math.inf
    for key in ("clean_accuracy", "pgd_accuracy", "fgsm_accuracy"):
      assert 0 <= run[key] <= 1
    assert run["pgd_accuracy"] <= run["clean_accuracy"]
  # One noise multiplier: the same epsilon for every run.
  assert len({r["epsilon"] for r in runs}) == 1
  assert len(results["summary"]) == 2

  table = (tmp_path / "results.md").read_text()
  assert "| public_batch | yes | 1 |" in table
  assert "| public_batch | no | 1 |" in table
  assert "| public_batch | no | 1 |" in result.stdout
  png = (tmp_path / "accuracy_vs_epsilon.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"   # one epsilon: bars

  # --replot redraws the table and plot from results.json, training nothing.
  (tmp_path / "results.md").unlink()
  (tmp_path / "accuracy_vs_epsilon.png").unlink()
  replot = subprocess.run(
      [sys.executable, "-m", "experiments.dp_bn_robust", "--replot",
       f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert replot.returncode == 0, replot.stderr[-3000:]
  assert (tmp_path / "results.md").read_text() == table
  assert (tmp_path / "accuracy_vs_epsilon.png").exists()


def test_replot_draws_accuracy_against_epsilon(tmp_path):
  """Several epsilons: lines against epsilon (one epsilon gives bars)."""
  rows, runs = [], []
  for norm in ("public_batch", "none"):
    for noise, epsilon in ((1.0, 4.0), (2.0, 1.5)):
      run = {"norm": norm, "robust": False, "noise_multiplier": noise,
             "epsilon": epsilon, "seed": 0, "clean_accuracy": 0.9,
             "pgd_accuracy": 0.3, "fgsm_accuracy": 0.4, "steps": 10,
             "train_s": 1.0, "eval_s": 1.0}
      runs.append(run)
      rows.append({
          "norm": norm, "PGD training": "no", "noise": noise,
          "epsilon": epsilon, "seeds": 1, "clean acc. %": "90.0 ± 0.0",
          "PGD acc. %": "30.0 ± 0.0", "FGSM acc. %": "40.0 ± 0.0",
          **{f"{k}_{s}": v for k in ("clean_accuracy", "pgd_accuracy",
                                     "fgsm_accuracy")
             for s, v in (("mean", run[k]), ("std", 0.0))}})
  settings = {"command": "python -m experiments.dp_bn_robust --sweep",
              "dataset": "digits", "model": "lenet5", "delta": 1e-5,
              "accountant": "pld", "pgd_norm": "inf", "pgd_epsilon": 0.1}
  (tmp_path / "results.json").write_text(json.dumps(
      {"settings": settings, "runs": runs, "summary": rows}))
  result = subprocess.run(
      [sys.executable, "-m", "experiments.dp_bn_robust", "--replot",
       f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  table = (tmp_path / "results.md").read_text()
  assert "`python -m experiments.dp_bn_robust --sweep`" in table
  assert "| none | no | 2 | 1.5 | 1 | 90.0 ± 0.0 |" in table
  png = (tmp_path / "accuracy_vs_epsilon.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_papernot_with_a_norm_is_a_usage_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.dp_bn_robust", "--model=papernot",
       "--norm=group", "--epochs=1", f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode != 0
  assert "--norm=none" in result.stderr
