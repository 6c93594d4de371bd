"""Checkpoints of the custom training loops, under any strategy.

Under `tf.distribute.MultiWorkerMirroredStrategy` every worker holds the
same variables and must take part in a save, but only the chief's copy may
land in the shared directory: two workers writing one file corrupt it.
`TrainingCheckpoints` follows Keras' rule for `BackupAndRestore`:

* the chief (`strategy.extended.should_checkpoint`; the only process under
  one-machine strategies) saves into `directory`;
* any other worker saves into ``directory/.worker-TASK`` and deletes it
  right away;
* every worker restores from `directory` (the chief's), so `directory`
  must be reachable by all of them: a shared file system or a bucket on a
  cluster, any local path on one host.

Example:
  >>> import tempfile
  >>> step = tf.Variable(0, dtype=tf.int64)
  >>> checkpoints = TrainingCheckpoints(
  ...     tf.train.Checkpoint(step=step), tempfile.mkdtemp())
  >>> checkpoints.restore_latest() is None
  True
  >>> _ = step.assign(5); checkpoints.save(5)
  >>> _ = step.assign(0); checkpoints.restore_latest().endswith("ckpt-5")
  True
  >>> int(step.numpy())
  5
"""

import os
from typing import Optional

import tensorflow as tf


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True where `strategy`'s checkpoints and results are written."""
  return bool(strategy.extended.should_checkpoint)


def task_id(strategy: tf.distribute.Strategy) -> int:
  """This worker's index in its cluster (0 without a cluster)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  task = getattr(resolver, "task_id", None)
  return int(task or 0)


class TrainingCheckpoints:
  """A `tf.train.CheckpointManager` that is safe under several workers.

  Args:
    checkpoint: The `tf.train.Checkpoint` of the training state.
    directory: The shared checkpoint directory (the chief writes it, every
      worker restores from it).
    strategy: The strategy the state was built under (default: the current
      one).
    max_to_keep: Checkpoints kept in `directory`.
  """

  def __init__(self, checkpoint: tf.train.Checkpoint, directory: str,
               strategy: Optional[tf.distribute.Strategy] = None,
               max_to_keep: int = 3):
    strategy = strategy or tf.distribute.get_strategy()
    self.checkpoint = checkpoint
    self.directory = directory
    self.is_chief = is_chief(strategy)
    self._write_directory = (
        directory if self.is_chief else
        os.path.join(directory, f".worker-{task_id(strategy)}"))
    self._manager = tf.train.CheckpointManager(
        checkpoint, self._write_directory, max_to_keep=max_to_keep)
    self.saved_step: Optional[int] = None

  def restore_latest(self) -> Optional[str]:
    """Restores the chief's latest checkpoint; returns its path, or None."""
    latest = tf.train.latest_checkpoint(self.directory)
    if latest is not None:
      self.checkpoint.restore(latest).expect_partial()
      self.saved_step = int(latest.rsplit("-", 1)[1])
    return latest

  def save(self, step: int) -> None:
    """Saves the state as checkpoint `step` (on every worker)."""
    self._manager.save(checkpoint_number=step)
    self.saved_step = step
    if not self.is_chief:
      tf.io.gfile.rmtree(self._write_directory)


__all__ = ["TrainingCheckpoints", "is_chief", "task_id"]
