"""Run as a script: DP training killed with SIGKILL, then resumed.

  python tests/resume_check.py ROOT WORKDIR ORDER PHASE

ORDER is "backup_first" or "privacy_first" (BackupAndRestore before or after
PrivacyCallback in the callback list). PHASE "kill" trains 4 epochs and kills
its own process with SIGKILL in the middle of epoch 3, after
BackupAndRestore backed up epoch 2 (the weights and optimizer variables of
every backup are saved to WORKDIR as well, for comparison). PHASE "resume"
runs the same script in a new process, with a new accountant, to the end,
then calls fit again for one more epoch with another new accountant; it
prints one JSON line. tests/test_resume.py checks it.

  python tests/resume_check.py ROOT WORKDIR ORDER PHASE INDEX PORT0 PORT1

runs worker INDEX of two under MultiWorkerMirroredStrategy (TF_CONFIG on
localhost), on `distributed_poisson_batches`: worker 0 kills itself as
above (worker 1 then waits for it in the all-reduce until the test kills
it), and only worker 0 saves the snapshots.
"""

import json
import os
import signal
import sys

WORKDIR, ORDER, PHASE = sys.argv[2:5]
WORKER = sys.argv[5:]
if WORKER:
  os.environ["TF_CONFIG"] = json.dumps({
      "cluster": {"worker": [f"localhost:{port}" for port in WORKER[1:]]},
      "task": {"type": "worker", "index": int(WORKER[0])}})
CHIEF = not WORKER or WORKER[0] == "0"

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

import tfdp

N, BATCH, STEPS_PER_EPOCH, EPOCHS, SIGMA, DELTA = 200, 20, 10, 4, 1.0, 1e-3
KILL_AT_STEP = 2 * STEPS_PER_EPOCH + 3


def _state(model):
  model.optimizer.build(model.trainable_variables)  # Restores slots, if due.
  return [w.numpy() for w in model.weights + model.optimizer.variables]


class Snapshots(tf.keras.callbacks.Callback):
  """After each backup (end of epoch), saves what was backed up."""

  def on_epoch_end(self, epoch, logs=None):
    state = _state(self.model)  # Every worker: it may run collectives.
    if CHIEF:
      np.savez(os.path.join(WORKDIR, f"epoch{epoch + 1}.npz"), *state)


class Killer(tf.keras.callbacks.Callback):

  def on_train_batch_end(self, batch, logs=None):
    if CHIEF and int(self.model.optimizer.iterations.numpy()) == KILL_AT_STEP:
      os.kill(os.getpid(), signal.SIGKILL)


class Probe(tf.keras.callbacks.Callback):
  """What training starts from, once every callback's on_train_begin ran."""

  def __init__(self):
    super().__init__()
    self.start = None

  def on_train_batch_begin(self, batch, logs=None):
    if self.start is None:
      self.start = (int(self.model.optimizer.iterations.numpy()),
                    _state(self.model))


def _accountant(sampled):
  return tfdp.privacy.PrivacyAccountant(SIGMA, DELTA,
                                        **sampled.accountant_kwargs())


def main():
  strategy = (tf.distribute.MultiWorkerMirroredStrategy() if WORKER else
              tf.distribute.get_strategy())
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, 6)).astype(np.float32)
  y = rng.integers(0, 3, N)
  if WORKER:
    sampled = tfdp.data.distributed_poisson_batches(
        strategy, x, y, BATCH, steps_per_epoch=STEPS_PER_EPOCH)
  else:
    sampled = tfdp.data.poisson_batches(x, y, BATCH,
                                        steps_per_epoch=STEPS_PER_EPOCH)
  tf.keras.utils.set_random_seed(1)
  with strategy.scope():
    model = tfdp.make_private(tf.keras.Sequential([
        tf.keras.layers.Dense(8, activation="tanh", input_shape=(6,)),
        tf.keras.layers.Dense(3)]))
    model.compile(
        optimizer=tfdp.optimizers.DPSGD(
            learning_rate=0.1, momentum=0.9, l2_norm_clip=1.0,
            noise_multiplier=SIGMA, expected_batch_size=BATCH),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="none"))
  accountant = _accountant(sampled)
  backup = tf.keras.callbacks.BackupAndRestore(os.path.join(WORKDIR, "backup"))
  privacy = tfdp.callbacks.PrivacyCallback(accountant)
  callbacks = ([backup, privacy] if ORDER == "backup_first" else
               [privacy, backup])
  probe = Probe()
  extra = [Snapshots(), Killer()] if PHASE == "kill" else [probe]
  model.fit(sampled.dataset, epochs=EPOCHS, verbose=0,
            steps_per_epoch=STEPS_PER_EPOCH, callbacks=callbacks + extra)
  first = accountant.spent()
  # A second fit, one more epoch, with a new accountant and callback.
  second_accountant = _accountant(sampled)
  model.fit(sampled.dataset, initial_epoch=EPOCHS, epochs=EPOCHS + 1,
            verbose=0, steps_per_epoch=STEPS_PER_EPOCH,
            callbacks=[tfdp.callbacks.PrivacyCallback(second_accountant)])
  backed_up = np.load(os.path.join(WORKDIR, "epoch2.npz"))
  restored_iterations, restored_state = probe.start
  print(json.dumps({
      "restored_iterations": restored_iterations,
      "restored_equals_backup": all(
          np.array_equal(a, backed_up[f"arr_{i}"])
          for i, a in enumerate(restored_state)),
      "first_fit": {"steps": first.steps, "epsilon": first.epsilon},
      "second_fit": {"steps": second_accountant.steps,
                     "epsilon": second_accountant.spent().epsilon},
      "first_accountant_after_second_fit": accountant.steps,
      "iterations": int(model.optimizer.iterations.numpy()),
  }))


if __name__ == "__main__":
  main()
