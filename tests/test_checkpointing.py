"""tfdp.checkpointing: the chief's directory, restored everywhere."""

import doctest

import tensorflow as tf

from tfdp import checkpointing


def test_docstring_example_runs():
  result = doctest.testmod(checkpointing, extraglobs={"tf": tf})
  assert result.attempted > 0 and result.failed == 0


def test_restores_the_latest_and_keeps_the_saved_step(tmp_path):
  value = tf.Variable(1.0)
  checkpoints = checkpointing.TrainingCheckpoints(
      tf.train.Checkpoint(value=value), str(tmp_path), max_to_keep=2)
  for step in (2, 4, 6):
    value.assign(float(step))
    checkpoints.save(step)
  assert sorted(p.name for p in tmp_path.glob("ckpt-*.index")) == [
      "ckpt-4.index", "ckpt-6.index"]
  value.assign(0.0)
  again = checkpointing.TrainingCheckpoints(
      tf.train.Checkpoint(value=value), str(tmp_path))
  assert again.restore_latest().endswith("ckpt-6")
  assert float(value.numpy()) == 6.0 and again.saved_step == 6


def test_one_machine_strategies_write_as_chief():
  strategy = tf.distribute.get_strategy()
  assert checkpointing.is_chief(strategy)
  assert checkpointing.task_id(strategy) == 0
