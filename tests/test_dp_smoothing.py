"""The DP-SGD + randomized smoothing experiment runs end to end on digits."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RADII = ("0.1", "0.5")


def _run(*args):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.dp_smoothing", *args],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_tiny_run_writes_results_with_soundness_counts(tmp_path):
  run_dir = tmp_path / "run"
  result = _run("--epochs=2", "--batch_size=256", "--target_epsilon=2",
                "--train_sigma=0.25", "--eval_size=30", "--num_samples=200",
                "--selection_samples=20", "--attack_votes=200",
                "--eval_pgd_steps=3", f"--radii={','.join(RADII)}",
                "--sampling_seed=0", f"--results_dir={run_dir}")
  results = json.loads((run_dir / "results.json").read_text())
  settings, evaluation = results["settings"], results["evaluation"]
  assert settings["dataset"] == "digits"
  assert settings["evaluated_on"] == "test"
  assert settings["train_examples"] == 1437
  # The noise was calibrated to the target for the steps taken (PLD,
  # Poisson sampling).
  assert results["steps"] == 2 * round(1437 / 256)
  assert results["accountant"] == "pld"
  assert results["sampling"] == "poisson"
  assert 1.9 < results["epsilon"] <= 2.0 + 1e-9
  assert evaluation["examples"] == 30
  assert evaluation["sigma"] == 0.25
  assert set(evaluation["certified_accuracy"]) == set(RADII)
  assert set(evaluation["pgd"]) == set(RADII)
  for radius in RADII:
    attacked = evaluation["pgd"][radius]
    certified = evaluation["certified_accuracy"][radius]
    # Certified-correct points are among the certified ones; a sound
    # certificate is never broken by the attack.
    assert 30 * certified <= attacked["certified"] <= 30
    assert attacked["flipped"] == 0
    assert 0 <= attacked["accuracy"] <= evaluation["accuracy"]
  # Fewer points certified at a larger radius.
  assert (evaluation["pgd"]["0.5"]["certified"] <=
          evaluation["pgd"]["0.1"]["certified"])
  table = (run_dir / "results.md").read_text()
  assert "| L2 radius | certified acc." in table
  assert "| 0.1 |" in table and "| 0.5 |" in table
  assert "| L2 radius | certified acc." in result.stdout
  png = (run_dir / "certified_accuracy.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"

  # --combine tabulates finished runs without training.
  combined = tmp_path / "combined"
  result = _run(f"--combine={run_dir},{run_dir}",
                f"--results_dir={combined}")
  table = (combined / "results.md").read_text()
  rows = [line for line in table.splitlines()
          if line.startswith("| ") and not line.startswith("| epsilon")]
  assert len(rows) == 2 and rows[0] == rows[1]
  assert "cert. r=0.1" in table and "certified / flipped" in table
  assert (combined / "certified_accuracy.png").exists()


def test_two_workers_train_once_and_the_chief_certifies(tmp_path):
  _run("--epochs=2", "--batch_size=256", "--target_epsilon=2",
       "--train_sigma=0.25", "--eval_size=10", "--num_samples=100",
       "--selection_samples=10", "--attack_votes=50", "--eval_pgd_steps=1",
       "--radii=0.1", "--sampling_seed=0", "--workers=2",
       f"--results_dir={tmp_path}")
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["settings"]["replicas"] == 2
  # The same steps and epsilon as one process: the whole set's q, every
  # global step counted once.
  assert results["steps"] == 2 * round(1437 / 256)
  assert 1.9 < results["epsilon"] <= 2.0 + 1e-9
  assert results["evaluation"]["examples"] == 10
  assert (tmp_path / "worker-1.log").exists()
  assert not list(tmp_path.glob("worker-1/results.*"))
