"""experiments.stobatch_mnist on digits: train, resume, TensorBoard, tables.

One replica, tiny settings; the privacy statement with its caveats, the
TensorBoard scalars the issue lists, a stopped run that resumes from its
checkpoint, and experiments.stobatch_tables over the run.
"""

import json
import pathlib
import subprocess
import sys

import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--dataset=digits", "--batch_size=24", "--attack_steps=1",
        "--eval_size=6", "--num_samples=6", "--kappas=0.05,0.1",
        "--eval_attack_steps=1", "--noise_seed=0", "--log_every=1",
        "--checkpoint_every=2"]


def _run(module, args, timeout=300):
  return subprocess.run([sys.executable, "-m", module, *args],
                        capture_output=True, text=True, cwd=ROOT,
                        timeout=timeout)


def _scalar_tags(log_dir: pathlib.Path):
  tags = {}
  for path in log_dir.glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        tags.setdefault(value.tag, set()).add(event.step)
  return tags


def test_train_resume_tensorboard_and_tables(tmp_path):
  first = _run("experiments.stobatch_mnist",
               ["--steps=3", f"--results_dir={tmp_path}", *TINY])
  assert first.returncode == 0, first.stderr[-3000:]
  assert "Caveats (read before relying on epsilon):" in first.stdout
  checkpoints = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints"))
  # Every 2 steps and when the run stops.
  assert [p.rsplit("-", 1)[1] for p in
          checkpoints.all_model_checkpoint_paths] == ["2", "3"]

  resumed = _run("experiments.stobatch_mnist",
                 ["--steps=5", f"--results_dir={tmp_path}", *TINY])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  out = json.loads((tmp_path / "results.json").read_text())
  assert out["steps"] == 5
  # The resumed run trained steps 4 and 5 only.
  assert [h["step"] for h in out["history"]] == [4, 5]
  assert out["evaluation"]["examples"] == 6
  assert set(out["evaluation"]["robust_accuracy"]) == {"fgsm", "ifgsm",
                                                       "mim", "pgd"}

  tags = _scalar_tags(tmp_path / "tensorboard")
  for tag in ("train/reconstruction_loss", "train/output_loss",
              "train/benign_loss", "train/benign_accuracy",
              "train/adversarial_accuracy"):
    assert tags[tag] == {1, 2, 3, 4, 5}, tag
  assert {1, 5} <= tags["privacy/epsilon"]
  for kappa in ("0.05", "0.1"):
    assert tags[f"eval/certified_accuracy/kappa_{kappa}"] == {3, 5}
    assert tags[f"eval/robust_accuracy/pgd/kappa_{kappa}"] == {3, 5}
  assert tags["eval/conventional_accuracy"] == {3, 5}

  table = tmp_path / "tables.md"
  collected = _run("experiments.stobatch_tables",
                   [f"--runs={tmp_path}", f"--output={table}"], timeout=120)
  assert collected.returncode == 0, collected.stderr[-3000:]
  text = table.read_text()
  assert "| digits | 2 = 1 + 1 | 24 | 5 | 6 | L-2, N(0, 0.5^2), smoothing |" in (
      text)
  assert "certified k=0.05" in text and "certified / flipped by PGD" in text
  assert "python -m experiments.stobatch_mnist --steps=5" in text


def test_tables_refuse_an_empty_match(tmp_path):
  result = _run("experiments.stobatch_tables",
                [f"--runs={tmp_path}/none*", f"--output={tmp_path}/t.md"],
                timeout=120)
  assert result.returncode != 0
  assert "--runs matched no directory with results.json" in result.stderr


def test_two_workers_train_resume_and_the_chief_writes(tmp_path):
  args = [f"--results_dir={tmp_path}", "--workers=2", *TINY]
  first = _run("experiments.stobatch_mnist", ["--steps=3", *args])
  assert first.returncode == 0, first.stderr[-3000:]
  # The chief's checkpoints only (the other worker's copies are removed).
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
      "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
      "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
  resumed = _run("experiments.stobatch_mnist", ["--steps=5", *args])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  out = json.loads((tmp_path / "results.json").read_text())
  assert out["replicas"] == 2 and out["steps"] == 5
  assert [h["step"] for h in out["history"]] == [4, 5]
  assert out["command"].startswith("python -m experiments.stobatch_mnist "
                                   "--steps=5 ")
  assert "--worker_" not in out["command"]
  # The other worker trained (its own TensorBoard) and wrote no results.
  assert _scalar_tags(tmp_path / "worker-1" / "tensorboard")[
      "train/output_loss"] == {1, 2, 3, 4, 5}
  assert not list((tmp_path / "worker-1").glob("results.*"))
  refused = _run("experiments.stobatch_mnist",
                 ["--steps=5", "--gpus=2", *args])
  assert refused.returncode != 0 and "--gpus" in refused.stderr
