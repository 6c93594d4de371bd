"""experiments.dp_gan end to end on digits: privacy, no-DP modes, resume."""

import json
import pathlib
import subprocess
import sys

import pytest

from tfdp import privacy

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ("--steps=12", "--log_every=6", "--grid_every=6",
        "--downstream_samples=200", "--downstream_epochs=1",
        "--logan_repeats=2", "--width=16", "--sampling_seed=0")


def _run(tmp_path, *args, check=True):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.dp_gan", *TINY,
       f"--output_dir={tmp_path}", *args],
      capture_output=True, text=True, cwd=ROOT, timeout=400)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def _results(tmp_path):
  (path,) = tmp_path.glob("dp_gan/*/results.json")
  return json.loads(path.read_text()), path


@pytest.mark.parametrize("workers", [1, 2])
def test_digits_run_prints_epsilon_downstream_and_logan(tmp_path, workers):
  result = _run(tmp_path, "--target_epsilon=3", "--gan_loss=wgan_gp",
                "--mean_samples=4", f"--workers={workers}")
  results, path = _results(tmp_path)
  settings = results["settings"]
  assert settings["replicas"] == workers
  assert "--worker_" not in settings["command"]
  assert settings["dataset"] == "digits" and settings["batch_size"] == 128
  # D's 12 steps at the calibrated noise, composed with the mean samples.
  expected = privacy.compute_epsilon(
      settings["noise_multiplier"], 12, 1e-5, batch_size=128,
      dataset_size=settings["train_examples"],
      release_noise_multiplier=results["mean_samples_noise_multiplier"])
  assert results["epsilon"] == pytest.approx(expected.epsilon)
  assert 2.9 <= results["epsilon"] <= 3.0
  assert f"epsilon={results['epsilon']:.3g}" in result.stdout
  assert "alone, D's steps spend epsilon=" in result.stdout
  assert results["budget"]["total"] == results["epsilon"]
  assert results["budget"]["mean_samples"] > 0
  assert "downstream accuracy on held-out real images" in result.stdout
  assert "LOGAN success rate" in result.stdout
  assert 0 <= results["downstream"]["accuracy"] <= 1
  assert results["logan"]["num_candidates"] == 300
  assert results["frechet_distance"] > 0
  assert (path.parent / "samples.png").exists()
  assert list((path.parent / "tensorboard").glob("events.*"))
  if workers == 2:
    # The other worker trained the same model on the chief's mean samples
    # (the same losses at every logged step), logging on its own.
    progress = [line for line in result.stdout.splitlines()
                if line.startswith("step ")]
    other = (path.parent / "worker-1.log").read_text().splitlines()
    assert len(progress) == 2
    assert ([line.split("  ")[:3] for line in progress] ==
            [line.split("  ")[:3] for line in other
             if line.startswith("step ")])
    assert list((path.parent / "worker-1" / "tensorboard").glob("events.*"))


def test_immediate_sensitivity_needs_the_flag_and_prints_no_epsilon(tmp_path):
  refused = _run(tmp_path, "--mode=is", "--noise_multiplier=1", check=False)
  assert refused.returncode != 0
  assert "no DP guarantee" in refused.stderr + refused.stdout
  result = _run(tmp_path, "--mode=is", "--noise_multiplier=1",
                "--no_dp_guarantee")
  results, _ = _results(tmp_path)
  assert results["epsilon"] is None
  assert "no DP guarantee" in result.stdout
  assert "epsilon=" not in result.stdout


def test_resume_counts_every_step_once_and_refuses_other_noise(tmp_path):
  _run(tmp_path, "--noise_multiplier=1.1")
  results, path = _results(tmp_path)
  path.unlink()  # As if killed after the last checkpoint.
  refused = _run(tmp_path, "--resume", "--noise_multiplier=1.3", check=False)
  assert refused.returncode != 0 and "--resume" in refused.stderr
  resumed = _run(tmp_path, "--resume", "--noise_multiplier=1.1",
                 "--steps=18")
  assert "Resumed from" in resumed.stdout
  results, _ = _results(tmp_path)
  expected = privacy.compute_epsilon(
      1.1, 18, 1e-5, batch_size=128,
      dataset_size=results["settings"]["train_examples"])
  assert results["epsilon"] == pytest.approx(expected.epsilon)
