"""experiments.model_inversion end to end on digits, at a tiny scale."""

import json
import pathlib
import subprocess
import sys

import pytest

from tfdp import privacy

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ("--epochs=2", "--evaluation_epochs=2", "--inversion_gan_steps=4",
        "--inversion_d_steps=2", "--inversion_gan_width=4", "--top_n=20",
        "--reconstruction_steps=5", "--reconstructions_per_class=2",
        "--inversion_log_every=2")


def _run(tmp_path, *args):
  return subprocess.run(
      [sys.executable, "-m", "experiments.model_inversion", *TINY, *args,
       f"--output_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=600)


def _results(tmp_path, *args):
  result = _run(tmp_path, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "GAN step 4/4" in result.stdout
  (path,) = tmp_path.glob("model_inversion/*/results.json")
  return path.parent, json.loads(path.read_text())


def test_nonprivate_target_writes_row_stages_and_grids(tmp_path):
  run_dir, results = _results(tmp_path, "--target=nonprivate")
  row = results["row"]
  assert row["target"] == "nonprivate" and row["epsilon"] is None
  assert results["settings"]["public"] == "held-out test split, unlabelled"
  assert results["settings"]["top_n"] == 20
  for stage in results["stages"].values():
    assert 0 <= stage["top1"] <= stage["top5"] <= 1
    assert stage["knn_distance"] >= 0 and stage["frechet_distance"] >= 0
  assert row["attack_top1"] == results["stages"]["reconstructions"]["top1"]
  assert (run_dir / "reconstructions.png").stat().st_size > 0
  assert (run_dir / "public_top_n.png").stat().st_size > 0
  assert (run_dir / "gan_samples.png").stat().st_size > 0
  assert list((run_dir / "tensorboard" / "inversion_gan").iterdir())
  table = (tmp_path / "model_inversion" / "table.md").read_text()
  assert table.startswith("| dataset | public | target | epsilon |")
  assert "| digits | held-out test split, unlabelled | nonprivate |" in table


@pytest.mark.parametrize("target", ["dp", "public_bn"])
def test_private_targets_report_the_accountants_epsilon(tmp_path, target):
  _, results = _results(tmp_path, f"--target={target}", "--target_epsilon=2")
  spent = results["target"]
  assert spent["steps"] > 0
  # The epsilon printed is the accountant's for the steps taken, <= target.
  assert results["row"]["epsilon"] == pytest.approx(privacy.compute_epsilon(
      spent["noise_multiplier"], spent["steps"], 1e-5,
      sampling_probability=256 / results["settings"]["private_train"]
  ).epsilon, rel=1e-6)
  assert results["row"]["epsilon"] <= 2.0 + 1e-9
  if target == "public_bn":
    assert results["settings"]["private_train"] == 1437 - 128


def test_digits_public_set_needs_28x28_data(tmp_path):
  result = _run(tmp_path, "--public=digits")
  assert result.returncode != 0
  assert "--public=digits needs 28x28" in result.stderr
