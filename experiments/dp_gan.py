r"""DP-GAN: train a private discriminator, sample, and measure the samples.

Trains `tfdp.gan.DPGAN` (D with DP-SGD on the fast engine, G by
post-processing) on --dataset, then reports:

* epsilon at --delta: D's steps composed with the mean samples' release
  (when --mode=adaptive or --gan_loss=wgan_gp use them); the noise
  multiplier is calibrated so that the planned D steps spend
  --target_epsilon in total, unless --noise_multiplier is given;
* downstream accuracy (and micro-AUROC): a classifier trained only on
  --downstream_samples generated labelled images, tested on the held-out
  REAL images;
* a Frechet distance between held-out real and generated images in the
  features of a classifier trained on the real training images (Inception
  weights cannot be downloaded here: compare these numbers with each other);
* LOGAN's white-box membership attack on D: members (training images) among
  the top-ranked candidates by D's score; chance is 0.1.

TensorBoard (RUN_DIR/tensorboard): losses and epsilon every --log_every
steps, a sample grid every --grid_every steps. Checkpoints every
--log_every steps in RUN_DIR/checkpoints; --resume continues the latest
unfinished run, its accountant counting every D step once.

  python -m experiments.dp_gan                            # digits, ~3 min
  python -m experiments.dp_gan --dataset=mnist \
      --npz=../shared/data/mnist_test.npz --target_epsilon=10
  python -m experiments.dp_gan --mode=none --no_dp_guarantee   # baseline
  python -m experiments.dp_gan --workers=2   # two local workers

--workers=N runs N worker processes under MultiWorkerMirroredStrategy
(docs/distributed.md): each samples its share of every Poisson batch and
makes 1/N of the fake batch, the noise is added once to D's global sum, the
chief releases the mean samples, evaluates and writes the results.

docs/dp_gan.md has the method, what is private and why, and the results.
"""

import json
import os
import time
from typing import Any, Dict, Optional

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from experiments import _data
from experiments import _distributed
from experiments import _report
import flags as shared_flags
from flags import data as data_flags
from flags import distributed as distributed_flags
from flags import gan as gan_flags
from flags import output as output_flags
from flags import privacy as privacy_flags
from flags import training as training_flags
import tfdp

_EXPERIMENT = "dp_gan"

flags.set_default(training_flags.BATCH_SIZE, 600)
flags.set_default(training_flags.LEARNING_RATE, 2e-4)
flags.set_default(privacy_flags.L2_NORM_CLIP, 4.0)
flags.set_default(privacy_flags.TARGET_EPSILON, 10.0)
shared_flags.adopt_key_flags(data_flags, privacy_flags, gan_flags,
                             distributed_flags,
                             exclude=distributed_flags.INTERNAL)
for _flag in (training_flags.BATCH_SIZE, training_flags.LEARNING_RATE,
              training_flags.SEED, output_flags.OUTPUT_DIR,
              output_flags.RESUME):
  flags.declare_key_flag(_flag.name)

# Defaults on the small embedded digits (1,437 training images, 360 held
# out), where the flags are not given.
_DIGITS_DEFAULTS = {"batch_size": 128, "mean_size": 1000,
                    "logan_candidates": 300}


def _value(holder: flags.FlagHolder) -> Any:
  """The flag's value; on digits, unless given, its digits default."""
  if holder.present or data_flags.DATASET.value != "digits":
    return holder.value
  return _DIGITS_DEFAULTS.get(holder.name, holder.value)


def _check_flags() -> None:
  if (gan_flags.MODE.value not in tfdp.gan.trainer.PRIVATE_MODES and
      not gan_flags.NO_DP_GUARANTEE.value):
    raise app.UsageError(
        f"--mode={gan_flags.MODE.value} gives {tfdp.gan.NO_DP_NOTE}; pass "
        "--no_dp_guarantee to run it knowingly, or use --mode=gc (DP-SGD) "
        "or --mode=adaptive.")
  if privacy_flags.SAMPLING.value != tfdp.privacy.POISSON:
    raise app.UsageError(
        "--sampling: the DP-GAN draws real batches by Poisson sampling "
        f"only, got --sampling={privacy_flags.SAMPLING.value}")


def _uses_mean_samples() -> bool:
  return (gan_flags.MODE.value == "adaptive" or
          gan_flags.GAN_LOSS.value == "wgan_gp")


def _noise_multiplier(dataset_size: int, release: Optional[float]) -> float:
  """--noise_multiplier, or the one spending --target_epsilon in total."""
  if gan_flags.MODE.value == "none":
    return 0.0
  if privacy_flags.NOISE_MULTIPLIER.value is not None:
    return privacy_flags.NOISE_MULTIPLIER.value
  if gan_flags.MODE.value == "is":
    raise app.UsageError("--mode=is has no epsilon to calibrate to: give "
                         "--noise_multiplier")
  return tfdp.privacy.calibrate_noise_multiplier(
      privacy_flags.TARGET_EPSILON.value, privacy_flags.DELTA.value,
      gan_flags.STEPS.value * gan_flags.D_STEPS.value,
      batch_size=_value(training_flags.BATCH_SIZE), dataset_size=dataset_size,
      accountant=privacy_flags.ACCOUNTANT.value,
      release_noise_multiplier=release)


def _mean_samples(dataset: tfdp.data.ImageDataset, run_dir: str, strategy):
  """The run's mean samples and their noise multiplier, released once.

  They are saved in the run directory (a private release may be kept), so
  that --resume reuses them instead of releasing (and paying for) new ones.
  Under several workers only the chief's draw is released: every worker
  gets its copy (the others' draws are discarded unseen).
  """
  path = os.path.join(run_dir, "mean_samples.npz")
  if os.path.exists(path):
    saved = np.load(path)
    return saved["samples"], float(saved["noise_multiplier"])
  samples, release = tfdp.gan.mean_samples.release(
      dataset.train.x, gan_flags.MEAN_SAMPLES.value,
      min(_value(gan_flags.MEAN_SIZE), len(dataset.train)),
      gan_flags.MEAN_NOISE_STD.value, seed=training_flags.SEED.value)
  samples = _distributed.broadcast_from_chief(strategy, samples)
  if _distributed.is_chief():
    np.savez(path, samples=samples, noise_multiplier=release)
  return samples, release


def _check_same_privacy(gan: tfdp.gan.DPGAN, run_dir: str) -> None:
  """Records the run's privacy settings; a --resume must use the same.

  The accountant counts the restored steps at the noise multiplier of the
  resumed process: were it another (e.g. recalibrated for another --steps),
  the restored steps would be accounted at the wrong noise.
  """
  config = {"mode": gan.mode, "noise_multiplier": gan.noise_multiplier,
            "l2_norm_clip": gan.l2_norm_clip, "batch_size": gan.batch_size,
            "delta": privacy_flags.DELTA.value}
  path = os.path.join(run_dir, "privacy.json")
  if not _distributed.is_chief():
    return
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != config:
      raise app.UsageError(
          f"--resume: the run in {run_dir} was trained with {saved}, these "
          f"flags give {config}. Resume with the run's flags (and --steps: "
          "the noise is calibrated to it), or start a new run.")
  else:
    _report.write_json(path, config)


def build(dataset: tfdp.data.ImageDataset, run_dir: str,
          strategy=None) -> tfdp.gan.DPGAN:
  """The trainer the flags describe (mean samples released if needed)."""
  strategy = strategy or tf.distribute.get_strategy()
  mean_samples = release = None
  if _uses_mean_samples():
    mean_samples, release = _mean_samples(dataset, run_dir, strategy)
  return tfdp.gan.DPGAN.build(
      gan_flags.ARCHITECTURE.value, dataset.input_shape,
      num_classes=dataset.num_classes,
      conditioning=gan_flags.CONDITIONING.value,
      latent_dim=gan_flags.LATENT_DIM.value, width=gan_flags.WIDTH.value,
      generator_width=gan_flags.GENERATOR_WIDTH.value,
      noise_multiplier=_noise_multiplier(len(dataset.train), release),
      expected_batch_size=_value(training_flags.BATCH_SIZE),
      dataset_size=len(dataset.train), loss=gan_flags.GAN_LOSS.value,
      mode=gan_flags.MODE.value,
      l2_norm_clip=privacy_flags.L2_NORM_CLIP.value,
      delta=privacy_flags.DELTA.value,
      learning_rate=training_flags.LEARNING_RATE.value,
      beta_1=gan_flags.BETA_1.value, mean_samples=mean_samples,
      mean_noise_multiplier=release,
      adaptive_scalar=gan_flags.ADAPTIVE_SCALAR.value,
      gp_weight=gan_flags.GP_WEIGHT.value,
      clip_fake=gan_flags.CLIP_FAKE.value,
      accountant=privacy_flags.ACCOUNTANT.value,
      allow_no_dp=gan_flags.NO_DP_GUARANTEE.value, strategy=strategy)


def _privacy_text(gan: tfdp.gan.DPGAN, parts: bool = False) -> str:
  """The privacy spent; with `parts`, D's steps and the mean samples alone."""
  spent = gan.spent()
  if spent is None:
    return f"epsilon: none (--mode={gan.mode}: {tfdp.gan.NO_DP_NOTE})"
  budget = gan.budget()
  if not parts or len(budget) == 1:
    return str(spent)
  return (f"{spent}; alone, D's steps spend epsilon="
          f"{budget['discriminator']:.3g} and the mean samples "
          f"epsilon={budget['mean_samples']:.3g}")


def train(gan: tfdp.gan.DPGAN, dataset: tfdp.data.ImageDataset,
          run_dir: str) -> float:
  """Runs the steps not taken yet (after a --resume); returns seconds."""
  checkpoint_dir = os.path.join(run_dir, "checkpoints")
  restored = tf.train.latest_checkpoint(checkpoint_dir)
  if restored:
    print(f"Resumed from {restored}")
  batch_size = _value(training_flags.BATCH_SIZE)
  if gan.replicas > 1:  # Each replica samples its share (endless).
    batches = iter(tfdp.data.distributed_poisson_batches(
        gan.strategy, dataset.train.x, dataset.train.y, batch_size,
        seed=privacy_flags.SAMPLING_SEED.value).dataset)
  else:
    batches = iter(tfdp.data.poisson_batches(
        dataset.train.x, dataset.train.y, batch_size,
        seed=privacy_flags.SAMPLING_SEED.value).dataset.repeat())
  started = time.perf_counter()

  def progress(step: int, losses: Dict[str, float]) -> None:
    print(f"step {step}/{gan_flags.STEPS.value}  d_fake "
          f"{losses['d_fake_loss']:.3f}  g {losses['g_loss']:.3f}  "
          f"{time.perf_counter() - started:.0f} s  {_privacy_text(gan)}",
          flush=True)

  gan.train(batches, gan_flags.STEPS.value,
            d_steps=gan_flags.D_STEPS.value,
            log_dir=os.path.join(_distributed.private_dir(run_dir),
                                 "tensorboard"),
            checkpoint_dir=checkpoint_dir,
            log_every=gan_flags.LOG_EVERY.value,
            grid_every=gan_flags.GRID_EVERY.value, on_log=progress)
  return time.perf_counter() - started


def markdown(results: Dict[str, Any]) -> str:
  """results.md: settings, then one row of measurements."""
  logan = results["logan"]
  downstream = results.get("downstream", {})
  row = {
      "mode": results["settings"]["mode"],
      "epsilon": results["epsilon"] if results["epsilon"] is not None
                 else "none (no DP guarantee)",
      "downstream accuracy": downstream.get("accuracy", "n/a"),
      "micro-AUROC": downstream.get("micro_auroc", "n/a"),
      "Frechet distance": results["frechet_distance"],
      "LOGAN success": (f"{logan['success_rate']:.3f} +- {logan['std']:.3f} "
                        f"(chance {logan['chance']:.2f}; top "
                        f"{logan['top_k']} of {logan['num_candidates']}, "
                        f"{logan['repeats']} repeats)"),
  }
  return "\n".join(_report.header(_EXPERIMENT, results["settings"]) + [
      _report.markdown_table([row]), "", results["privacy"], "",
      "![samples](samples.png)", ""])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _check_flags()
  strategy, run_dir = _distributed.start(
      lambda: _report.run_directory(output_flags.OUTPUT_DIR.value,
                                    _EXPERIMENT,
                                    resume=output_flags.RESUME.value))
  dataset = _data.load_dataset()
  tf.keras.utils.set_random_seed(training_flags.SEED.value)
  gan = build(dataset, run_dir, strategy)
  _check_same_privacy(gan, run_dir)
  print(f"{dataset.name}: {len(dataset.train)} training images, "
        f"{len(dataset.test)} held out; D {gan.mode}, noise multiplier "
        f"{gan.noise_multiplier:.4g}; run directory {run_dir}", flush=True)
  train_s = train(gan, dataset, run_dir)
  if not _distributed.is_chief():
    return  # The chief evaluates the (identical) model and writes.
  started = time.perf_counter()
  evaluation = tfdp.gan.evaluation.evaluate(
      gan, dataset.train, dataset.test, num_classes=dataset.num_classes,
      downstream_samples=gan_flags.DOWNSTREAM_SAMPLES.value,
      downstream_epochs=gan_flags.DOWNSTREAM_EPOCHS.value,
      logan_candidates=_value(gan_flags.LOGAN_CANDIDATES),
      logan_repeats=gan_flags.LOGAN_REPEATS.value,
      seed=training_flags.SEED.value)
  spent = gan.spent()
  settings = {
      "command": _distributed.user_command("experiments." + _EXPERIMENT),
      "dataset": dataset.name,
      "model": f"{gan.conditioning} {gan_flags.ARCHITECTURE.value} "
               f"(D width {gan_flags.WIDTH.value}, G width "
               f"{gan_flags.GENERATOR_WIDTH.value or gan_flags.WIDTH.value})",
      "train_examples": len(dataset.train),
      "held_out_examples": len(dataset.test),
      "evaluated_on": _data.evaluated_on(),
      "mode": gan.mode, "gan_loss": gan.loss, "steps": gan_flags.STEPS.value,
      "d_steps": gan_flags.D_STEPS.value,
      "batch_size": gan.batch_size,
      "learning_rate": training_flags.LEARNING_RATE.value,
      "l2_norm_clip": gan.l2_norm_clip,
      "clip_fake": gan.clip_fake,
      "noise_multiplier": gan.noise_multiplier,
      "seed": training_flags.SEED.value,
      "replicas": gan.replicas,
  }
  if gan.is_private:
    settings.update(target_epsilon=privacy_flags.TARGET_EPSILON.value,
                    delta=privacy_flags.DELTA.value)
  results = {
      "settings": settings,
      "epsilon": None if spent is None else spent.epsilon,
      "mean_samples_noise_multiplier": (
          None if spent is None else spent.release_noise_multiplier),
      "privacy": _privacy_text(gan, parts=True),
      "budget": gan.budget(),
      **evaluation,
      "train_s": train_s,
      "eval_s": time.perf_counter() - started,
  }
  results_dir = gan_flags.RESULTS_DIR.value or run_dir
  text = markdown(results)
  _report.write_results(results_dir, results, text)
  _report.save_image(gan.sample_grid(),
                     os.path.join(results_dir, "samples.png"),
                     scale=4 if dataset.input_shape[0] < 16 else 1)
  if results_dir != run_dir:  # --resume looks for results.json in run_dir.
    _report.write_json(os.path.join(run_dir, "results.json"), results)
  print(text)
  if "downstream" in evaluation:
    print(f"downstream accuracy on held-out real images: "
          f"{evaluation['downstream']['accuracy']:.4f}")
  print(f"LOGAN success rate: {evaluation['logan']['success_rate']:.3f} "
        f"(chance {evaluation['logan']['chance']:.2f})")
  print(f"Results: {results_dir}")


if __name__ == "__main__":
  app.run(main)
