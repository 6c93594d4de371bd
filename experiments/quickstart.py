r"""Quickstart: DP-SGD through model.fit on the embedded digits, to a budget.

Trains a 64-32-10 tanh MLP on scikit-learn's digits with a DP optimizer and
tfdp's fast per-example clipping (`tfdp.make_private`), Poisson sampling and
a noise multiplier calibrated so that the planned epochs spend
--target_epsilon (at --delta), then prints test accuracy, the epsilon
actually spent, the steps taken and the wall time.

  python -m experiments.quickstart
  python -m experiments.quickstart --target_epsilon=1 --epochs=20
  python -m experiments.quickstart --resume   # after a crash or a kill
  tensorboard --logdir runs/quickstart

Every epoch is backed up (model, optimizer, accountant) under the run
directory; --resume continues the latest unfinished run from there, with the
same flags, and its epsilon counts every step of the final model once.
"""

import os
import time

from absl import app
import tensorflow as tf

from experiments import _report
import flags as shared_flags
from flags import output as output_flags
from flags import privacy as privacy_flags
from flags import training as training_flags
import tfdp

shared_flags.adopt_key_flags(output_flags, privacy_flags, training_flags)

_SAMPLERS = {
    tfdp.privacy.POISSON: tfdp.data.poisson_batches,
    tfdp.privacy.FIXED_SIZE: tfdp.data.fixed_size_batches,
}


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(training_flags.SEED.value)
  started = time.perf_counter()
  digits = tfdp.data.load_digits()
  sampled = _SAMPLERS[privacy_flags.SAMPLING.value](
      digits.train.x, digits.train.y, training_flags.BATCH_SIZE.value,
      seed=privacy_flags.SAMPLING_SEED.value)
  accounting = dict(accountant=privacy_flags.ACCOUNTANT.value,
                    **sampled.accountant_kwargs())

  noise_multiplier = privacy_flags.NOISE_MULTIPLIER.value
  if noise_multiplier is None:
    noise_multiplier = tfdp.privacy.calibrate_noise_multiplier(
        privacy_flags.TARGET_EPSILON.value, privacy_flags.DELTA.value,
        training_flags.EPOCHS.value * sampled.steps_per_epoch, **accounting)
  accountant = tfdp.privacy.PrivacyAccountant(
      noise_multiplier, privacy_flags.DELTA.value, **accounting)

  model = tfdp.make_private(
      tfdp.models.mlp(digits.input_shape, digits.num_classes))
  model.compile(
      optimizer=tfdp.optimizers.DPSGD(
          learning_rate=training_flags.LEARNING_RATE.value,
          momentum=training_flags.MOMENTUM.value,
          l2_norm_clip=privacy_flags.L2_NORM_CLIP.value,
          noise_multiplier=noise_multiplier,
          expected_batch_size=training_flags.BATCH_SIZE.value),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
      metrics=["accuracy"])

  run_dir = _report.run_directory(output_flags.OUTPUT_DIR.value, "quickstart",
                                  resume=output_flags.RESUME.value)
  callbacks = [
      _report.backup_callback(run_dir),
      tfdp.callbacks.PrivacyCallback(
          accountant, target_epsilon=privacy_flags.TARGET_EPSILON.value,
          log_dir=run_dir, checkpoint_path=os.path.join(run_dir, "ckpt")),
      tf.keras.callbacks.TensorBoard(run_dir),
  ]
  model.fit(sampled.dataset, epochs=training_flags.EPOCHS.value,
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
      "wall_time_s": time.perf_counter() - started,
  }
  _report.write_json(os.path.join(run_dir, "results.json"), results)
  print(_report.markdown_table([results]))
  print(f"\nPrivacy: {spent}.")
  print(f"Logs, checkpoint and results.json: {run_dir}")


if __name__ == "__main__":
  app.run(main)
