"""experiments.stobatch_tinyimagenet and securesgd_tinyimagenet, end to end.

Both run on a fake tiny-imagenet-200 folder (tests/tinyimagenet_fake.py: 3
classes kept, 4 training and 2 validation images each) at 32x32 inputs,
with 1 step and tiny evaluation settings: they check the plumbing (flags,
loader, model, training, evaluation, results files), not accuracy.
"""

import json
import pathlib
import subprocess
import sys

import pytest

from tests import tinyimagenet_fake as fake

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--num_classes=3", "--input_side=32", "--steps=1", "--batch_size=3",
        "--eval_size=4", "--num_samples=4", "--kappas=0.05",
        "--eval_attacks=pgd", "--eval_attack_steps=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fake.make(tmp_path_factory.mktemp("tiny"))


def _run(module, args, timeout=300):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}",
                         *args], capture_output=True, text=True, cwd=ROOT,
                        timeout=timeout)


def _check_results(results_dir, examples):
  out = json.loads((results_dir / "results.json").read_text())
  evaluation = out["evaluation"]
  assert out["dataset"] == "tinyimagenet" and out["steps"] == 1
  assert out["train_examples"] == examples
  assert evaluation["examples"] == 4 and evaluation["num_samples"] == 4
  assert set(evaluation["robust_accuracy"]) == {"pgd"}
  assert 0 <= evaluation["certified_accuracy"]["0.05"] <= 1
  assert evaluation["soundness"]["0.05"]["flipped"] == 0
  assert "| certified accuracy |" in (results_dir / "results.md").read_text()
  assert list((results_dir / "tensorboard").iterdir())
  return out


def test_stobatch_tinyimagenet(data_dir, tmp_path):
  result = _run("stobatch_tinyimagenet",
                [f"--data_dir={data_dir}", "--attack_steps=1",
                 "--noise_seed=0", f"--results_dir={tmp_path}", *TINY])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "epsilon = epsilon_ae + epsilon_out = 1 + 1 = 2" in result.stdout
  out = _check_results(tmp_path, examples=12)
  assert out["architecture"] == "tinyimagenet" and out["epsilon"] == 2.0
  # 7x7 kernel, 3 channels, output side 16: Delta2 = 3 (16^2 + 2) 7^2.
  assert out["budget"]["delta2"] == 37926.0


def test_securesgd_tinyimagenet_train_then_test(data_dir, tmp_path):
  args = [f"--data_dir={data_dir}", "--noise_multiplier=1.0",
          f"--results_dir={tmp_path}", *TINY]
  result = _run("securesgd_tinyimagenet", args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "-DP by DP-SGD" in result.stdout
  trained = _check_results(tmp_path, examples=12)
  assert 0 < trained["epsilon"] < float("inf")
  assert trained["delta"] == 1e-5 and trained["noise_multiplier"] == 1.0
  hgm = trained["hgm"]
  assert hgm["epsilon"] == 1.0 and hgm["attack_size"] == 0.1
  assert hgm["sigma"] == pytest.approx(0.485424, rel=1e-5)
  # The kernel constraint held through training.
  assert trained["evaluation"]["sensitivity"] <= 1.0

  # A stopped run resumes from its checkpoint: one more step, more epsilon.
  resumed_args = [a.replace("--steps=1", "--steps=2") for a in args]
  resumed = _run("securesgd_tinyimagenet", resumed_args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  resumed_out = json.loads((tmp_path / "results.json").read_text())
  assert resumed_out["steps"] == 2
  assert resumed_out["epsilon"] > trained["epsilon"]
  trained = resumed_out

  tested = _run("securesgd_tinyimagenet", ["--mode=test", *resumed_args])
  assert tested.returncode == 0, tested.stderr[-3000:]
  out = json.loads((tmp_path / "results.json").read_text())
  assert out["mode"] == "test" and out["steps"] == 2
  assert out["epsilon"] == trained["epsilon"]
  # The noiseless network is deterministic: same weights, same predictions.
  assert (out["evaluation"]["base_accuracy"]
          == trained["evaluation"]["base_accuracy"])
  assert (out["evaluation"]["sensitivity"]
          == trained["evaluation"]["sensitivity"])


def test_usage_errors(tmp_path):
  result = _run("securesgd_tinyimagenet",
                ["--epsilon_ae=2", f"--results_dir={tmp_path}"], timeout=120)
  assert result.returncode != 0
  assert "--epsilon_ae: StoBatch flag(s), not used" in result.stderr
  assert "Traceback" not in result.stderr
  result = _run("stobatch_tinyimagenet",
                ["--steps=1", f"--results_dir={tmp_path}"], timeout=120)
  assert result.returncode != 0
  assert "--dataset=tinyimagenet needs --data_dir" in result.stderr
  assert "Traceback" not in result.stderr
