"""The main job runs end to end and reports what it spent."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tfdp import privacy

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


def test_quickstart_on_two_local_workers_stops_at_the_target(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.quickstart", "--workers=2",
       "--epochs=6", "--noise_multiplier=2.0", "--target_epsilon=1.0",
       f"--output_dir={tmp_path}", "--verbose=0"],
      capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  (results_file,) = (tmp_path / "quickstart").glob("*/results.json")
  results = json.loads(results_file.read_text())
  assert results["workers"] == 2
  # Every step counted once, with the whole set's q: after 4 epochs of 22
  # steps epsilon is 0.91; a 5th would pass 1.0, so both workers stopped.
  epsilon = lambda steps: privacy.compute_epsilon(
      2.0, steps, 1e-5, batch_size=64, dataset_size=1437).epsilon
  steps = 4 * round(1437 / 64)
  assert epsilon(steps) <= 1.0 < epsilon(steps + round(1437 / 64))
  assert results["steps"] == steps
  assert results["epsilon"] == pytest.approx(epsilon(steps), rel=1e-9)
  assert results["test_accuracy"] > 0.3
  # Worker 1 wrote its own logs, not the chief's.
  assert (results_file.parent / "worker-1.log").exists()
  assert (results_file.parent / "worker-1" / "privacy").is_dir()
  assert result.stdout.count("| test_accuracy |") == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_quickstart_killed_then_resumed_counts_every_step_once(tmp_path,
                                                               workers):
  epochs, steps_per_epoch = 8, round(1437 / 64)
  command = [sys.executable, "-m", "experiments.quickstart",
             f"--epochs={epochs}", "--target_epsilon=2.0",
             f"--output_dir={tmp_path}", "--verbose=0",
             f"--workers={workers}"]
  # A session of its own: kill -9 reaches the launcher and its workers.
  run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
  deadline = time.monotonic() + 300
  backups = lambda: list((tmp_path / "quickstart").glob(
      "*/backup/chief/checkpoint"))
  while not backups() and run.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  os.killpg(run.pid, signal.SIGKILL)  # kill -9 once epoch 1 is backed up.
  _, stderr = run.communicate(timeout=60)
  assert run.returncode == -signal.SIGKILL, stderr[-3000:]
  assert not list((tmp_path / "quickstart").glob("*/results.json"))

  result = subprocess.run(command + ["--resume"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  (results_file,) = (tmp_path / "quickstart").glob("*/results.json")
  results = json.loads(results_file.read_text())
  # The final weights' lineage: all planned steps, counted once.
  assert results["steps"] == epochs * steps_per_epoch
  assert results["epsilon"] == pytest.approx(privacy.compute_epsilon(
      results["noise_multiplier"], results["steps"], results["delta"],
      batch_size=64, dataset_size=1437).epsilon, rel=1e-9)
  assert results["epsilon"] <= 2.0
  # A finished run is not resumed again.
  again = subprocess.run(command + ["--resume"], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
  assert again.returncode != 0 and "finished" in again.stderr
