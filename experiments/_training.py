"""Shared DP-SGD set-up for the experiments, from the privacy and training flags.

The batch sampler (--sampling, --batch_size, --sampling_seed), the noise
multiplier (--noise_multiplier, or calibrated to --target_epsilon over
--epochs), the accountant that matches them, and a model compiled with
`tfdp.optimizers.DPSGD` and a per-example loss.
"""

from typing import Optional

from absl import app
import tensorflow as tf

from flags import privacy as privacy_flags
from flags import training as training_flags
import tfdp

_SAMPLERS = {
    tfdp.privacy.POISSON: tfdp.data.poisson_batches,
    tfdp.privacy.FIXED_SIZE: tfdp.data.fixed_size_batches,
}


def sampled_batches(x, y, strategy=None) -> tfdp.data.SampledDataset:
  """(x, y) batched by the --sampling sampler at --batch_size.

  Under a strategy with several replicas (e.g. --workers), each replica
  samples its share of every Poisson batch
  (`tfdp.data.distributed_poisson_batches`); fixed-size sampling has no
  such form and is refused.
  """
  if strategy is None or strategy.num_replicas_in_sync == 1:
    return _SAMPLERS[privacy_flags.SAMPLING.value](
        x, y, training_flags.BATCH_SIZE.value,
        seed=privacy_flags.SAMPLING_SEED.value)
  if privacy_flags.SAMPLING.value != tfdp.privacy.POISSON:
    raise app.UsageError(
        f"--sampling={privacy_flags.SAMPLING.value}: with several replicas "
        "(--workers) only Poisson batches are sampled; drop --sampling")
  return tfdp.data.distributed_poisson_batches(
      strategy, x, y, training_flags.BATCH_SIZE.value,
      seed=privacy_flags.SAMPLING_SEED.value)


def accounting(sampled: tfdp.data.SampledDataset):
  """The accountant's keyword arguments for --accountant and the sampler."""
  return dict(accountant=privacy_flags.ACCOUNTANT.value,
              **sampled.accountant_kwargs())


def noise_multiplier(sampled: tfdp.data.SampledDataset) -> float:
  """--noise_multiplier, or the one that spends --target_epsilon in --epochs."""
  if privacy_flags.NOISE_MULTIPLIER.value is not None:
    return privacy_flags.NOISE_MULTIPLIER.value
  return tfdp.privacy.calibrate_noise_multiplier(
      privacy_flags.TARGET_EPSILON.value, privacy_flags.DELTA.value,
      training_flags.EPOCHS.value * sampled.steps_per_epoch,
      **accounting(sampled))


def privacy_accountant(
    noise: float,
    sampled: tfdp.data.SampledDataset) -> tfdp.privacy.PrivacyAccountant:
  """The accountant of DP-SGD at `noise` on `sampled`'s batches (--delta)."""
  return tfdp.privacy.PrivacyAccountant(noise, privacy_flags.DELTA.value,
                                        **accounting(sampled))


def compile_private(model: tf.keras.Model, noise: float,
                    batch_size: Optional[int] = None,
                    **optimizer_options) -> tf.keras.Model:
  """Compiles with DPSGD (the flags' learning rate, momentum, clip norm).

  Args:
    model: the model (usually from `tfdp.make_private`).
    noise: the noise multiplier.
    batch_size: the expected batch size; default --batch_size.
    **optimizer_options: more DPSGD arguments, e.g. use_ema=True.

  Returns:
    The model, compiled with a per-example sparse cross-entropy on logits
    and an accuracy metric.
  """
  model.compile(
      optimizer=tfdp.optimizers.DPSGD(
          learning_rate=training_flags.LEARNING_RATE.value,
          momentum=training_flags.MOMENTUM.value,
          l2_norm_clip=privacy_flags.L2_NORM_CLIP.value,
          noise_multiplier=noise,
          expected_batch_size=(batch_size or
                               training_flags.BATCH_SIZE.value),
          **optimizer_options),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
      metrics=["accuracy"])
  return model
