r"""Quickstart: DP-SGD through model.fit on the embedded digits, to a budget.

Trains a 64-32-10 tanh MLP on scikit-learn's digits with a DP optimizer and
tfdp's fast per-example clipping (`tfdp.make_private`), Poisson sampling and
a noise multiplier calibrated so that the planned epochs spend
--target_epsilon (at --delta), then prints test accuracy, the epsilon
actually spent, the steps taken and the wall time.

  python -m experiments.quickstart
  python -m experiments.quickstart --target_epsilon=1 --epochs=20
  python -m experiments.quickstart --resume   # after a crash or a kill
  python -m experiments.quickstart --workers=2   # two local workers
  tensorboard --logdir runs/quickstart

Every epoch is backed up (model, optimizer, accountant) under the run
directory; --resume continues the latest unfinished run from there, with the
same flags, and its epsilon counts every step of the final model once.

--workers=N runs N worker processes under MultiWorkerMirroredStrategy
(docs/distributed.md): each samples its share of every Poisson batch
(`tfdp.data.distributed_poisson_batches`), the noise is added once to the
global sum, and worker 0 writes the results.
"""

import os
import time

from absl import app
import tensorflow as tf

from experiments import _distributed
from experiments import _report
from experiments import _training
import flags as shared_flags
from flags import distributed as distributed_flags
from flags import output as output_flags
from flags import privacy as privacy_flags
from flags import training as training_flags
import tfdp

shared_flags.adopt_key_flags(
    distributed_flags, output_flags, privacy_flags, training_flags,
    exclude=distributed_flags.INTERNAL)


def main(argv):
  del argv
  strategy, run_dir = _distributed.start(
      lambda: _report.run_directory(output_flags.OUTPUT_DIR.value,
                                    "quickstart",
                                    resume=output_flags.RESUME.value))
  tf.keras.utils.set_random_seed(training_flags.SEED.value)
  started = time.perf_counter()
  digits = tfdp.data.load_digits()
  sampled = _training.sampled_batches(digits.train.x, digits.train.y,
                                      strategy)
  noise_multiplier = _training.noise_multiplier(sampled)
  accountant = _training.privacy_accountant(noise_multiplier, sampled)
  with strategy.scope():
    model = _training.compile_private(
        tfdp.make_private(
            tfdp.models.mlp(digits.input_shape, digits.num_classes)),
        noise_multiplier)

  own_dir = _distributed.private_dir(run_dir)
  callbacks = [
      _report.backup_callback(run_dir),
      tfdp.callbacks.PrivacyCallback(
          accountant, target_epsilon=privacy_flags.TARGET_EPSILON.value,
          log_dir=own_dir, checkpoint_path=os.path.join(own_dir, "ckpt")),
      tf.keras.callbacks.TensorBoard(own_dir),
  ]
  model.fit(sampled.dataset, epochs=training_flags.EPOCHS.value,
            steps_per_epoch=sampled.steps_per_epoch,
            validation_data=(digits.test.x, digits.test.y),
            callbacks=callbacks, verbose=output_flags.VERBOSE.value)
  _, test_accuracy = model.evaluate(digits.test.x, digits.test.y, verbose=0)

  spent = accountant.spent()
  results = {
      "test_accuracy": float(test_accuracy),
      "epsilon": spent.epsilon,
      "delta": spent.delta,
      "accountant": spent.accountant,
      "sampling": spent.sampling,
      "noise_multiplier": spent.noise_multiplier,
      "steps": spent.steps,
      "workers": strategy.num_replicas_in_sync,
      "wall_time_s": time.perf_counter() - started,
  }
  if not _distributed.is_chief():
    return
  _report.write_json(os.path.join(run_dir, "results.json"), results)
  print(_report.markdown_table([results]))
  print(f"\nPrivacy: {spent}.")
  print(f"Logs, checkpoint and results.json: {run_dir}")


if __name__ == "__main__":
  app.run(main)
