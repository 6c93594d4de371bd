"""experiments.stobatch_cifar10: 4 replicas on CPU with --allow_cpu_replicas.

The acceptance command with tiny settings, then --mode=test on its
checkpoint, and the refusal of --gpus=4 without GPUs and without the flag.
"""

import json
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
NO_GPU = len(tf.config.list_physical_devices("GPU")) < 4
# The CIFAR-10 architecture costs ~1 GFLOP per 28x28x3 example forward
# (~40 MFLOP at digits' default 8x8): keep every count small (votes
# dominate the evaluation).
TINY = ["--dataset=digits", "--batch_size=6", "--attack_steps=1",
        "--eval_size=4", "--num_samples=6", "--kappas=0.05",
        "--eval_attacks=pgd", "--eval_attack_steps=1", "--noise_seed=0"]


def _run(args, timeout=240):
  return subprocess.run([sys.executable, "-m", "experiments.stobatch_cifar10",
                         *args], capture_output=True, text=True, cwd=ROOT,
                        timeout=timeout)


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU fall-back")
def test_four_cpu_replicas_train_evaluate_and_resume(tmp_path):
  result = _run(["--gpus=4", "--allow_cpu_replicas", "--steps=1",
                 f"--results_dir={tmp_path}", *TINY])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "epsilon = epsilon_ae + epsilon_out = 1 + 1 = 2" in result.stdout
  out = json.loads((tmp_path / "results.json").read_text())
  assert out["replicas"] == 4 and out["steps"] == 1
  assert out["epsilon"] == 2.0
  evaluation = out["evaluation"]
  assert set(evaluation["robust_accuracy"]) == {"pgd"}
  assert 0 <= evaluation["certified_accuracy"]["0.05"] <= 1
  assert evaluation["soundness"]["0.05"]["flipped"] == 0
  assert "| certified accuracy |" in (tmp_path / "results.md").read_text()
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
  assert list((tmp_path / "tensorboard").iterdir())

  tested = _run(["--gpus=1", "--mode=test", f"--results_dir={tmp_path}",
                 *TINY])
  assert tested.returncode == 0, tested.stderr[-3000:]
  out = json.loads((tmp_path / "results.json").read_text())
  assert out["mode"] == "test" and out["steps"] == 1


@pytest.mark.skipif(not NO_GPU, reason="needs fewer than 4 GPUs")
def test_four_gpus_without_gpus_fails_clearly(tmp_path):
  result = _run(["--gpus=4", "--steps=1", f"--results_dir={tmp_path}",
                 *TINY], timeout=120)
  assert result.returncode != 0
  assert "--gpus=4 asks for 4 replicas" in result.stderr
  assert "--allow_cpu_replicas" in result.stderr
  assert "Traceback" not in result.stderr


def test_digits_defaults_apply_to_flags_not_given():
  # pylint: disable=g-import-not-at-top
  from absl import flags
  from absl.testing import flagsaver
  from experiments import stobatch_mnist
  from flags import stobatch as sb_flags
  # pylint: enable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  setting = stobatch_mnist.setting
  assert setting(sb_flags.STEPS, "digits") == 30
  assert setting(sb_flags.INPUT_SIDE, "digits") == 8
  assert setting(sb_flags.ATTACK_STEPS, "digits") == 3
  assert setting(sb_flags.ATTACK_VOTES, "digits") == 20
  assert setting(sb_flags.ATTACK_VOTES, "mnist") is None
  # Other datasets keep the flags' own defaults.
  assert setting(sb_flags.STEPS, "mnist") == 500
  assert setting(sb_flags.INPUT_SIDE, "cifar10") is None
  # 1,437 digits over 4 replicas: 8 fixed batches of 179.
  assert stobatch_mnist.digits_batch_size(1437, 4) == 179
  assert setting(sb_flags.BATCH_SIZE, "digits", 179) == 179
  with flagsaver.flagsaver():
    flags.FLAGS["steps"].parse("7")
    flags.FLAGS["batch_size"].parse("6")
    assert setting(sb_flags.STEPS, "digits") == 7
    assert setting(sb_flags.BATCH_SIZE, "digits", 179) == 6
