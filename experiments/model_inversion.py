r"""Model inversion (PLG-MI) against a classifier trained with or without DP.

Trains the target (LeNet-5: --target=nonprivate, dp or public_bn) on the
private training split, then attacks it as `tfdp.attacks.model_inversion`
describes: top-n selection of unlabelled public images by the target's
softmax, the attacker's conditional GAN with the target's margin loss, and
latent optimisation per class. An evaluation classifier of another
architecture, trained on the private split, judges the reconstructions:
attack top-1 / top-5, the KNN distance to the nearest private image of the
class and a Frechet distance, both in its features. Two cheaper stages are
reported beside them as controls: the selected public images themselves
(under their pseudo-labels), and the GAN's samples before latent search;
and, for scale, the held-out real images of each class (how far a genuine
new image of the class lies from the nearest private one).

  python -m experiments.model_inversion                  # digits, minutes
  python -m experiments.model_inversion --dataset=mnist --target=nonprivate
  python -m experiments.model_inversion --dataset=mnist --target=dp \
      --target_epsilon=1
  python -m experiments.model_inversion --dataset=mnist --target=public_bn \
      --target_epsilon=4

--dataset=mnist reads ../shared/data/mnist_test.npz where TFDS has no MNIST
(8,000 private training images, 2,000 held out); its public set is then the
digits fitted to 28x28. Each run writes RUN_DIR/results.json and .md,
reconstructions.png (one row per class), gan_samples.png (G before the
latent search) and public_top_n.png, and
TensorBoard scalars; its row joins OUTPUT_DIR/model_inversion/table.md.
docs/model_inversion.md has the method and the results.
"""

import os
import sys
import time
from typing import Dict, Tuple

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from experiments import _data
from experiments import _report
from experiments import _training
import flags as shared_flags
from flags import data as data_flags
from flags import model_inversion as mi_flags
from flags import output as output_flags
from flags import privacy as privacy_flags
from flags import training as training_flags
import tfdp

_EXPERIMENT = "model_inversion"
_NONPRIVATE_LEARNING_RATE = 1e-3  # Adam's, for --target=nonprivate.
# table.md's columns, in this order (each run's row holds them all).
_TABLE_COLUMNS = ("dataset", "public", "target", "epsilon", "target_accuracy",
                  "attack_top1", "attack_top5", "knn_distance",
                  "frechet_distance", "public_top1", "gan_samples_top1",
                  "held_out_knn_distance", "seed", "run")

flags.set_default(training_flags.BATCH_SIZE, 256)
flags.set_default(training_flags.EPOCHS, 15)
flags.set_default(training_flags.LEARNING_RATE, 0.25)
flags.set_default(training_flags.MOMENTUM, 0.5)
flags.set_default(privacy_flags.L2_NORM_CLIP, 1.0)
flags.set_default(privacy_flags.TARGET_EPSILON, 1.0)
shared_flags.adopt_key_flags(mi_flags, data_flags, output_flags,
                             privacy_flags, training_flags,
                             exclude=("resume", "validation_fraction"))


def _public_images(dataset: tfdp.data.ImageDataset) -> Tuple[np.ndarray, str]:
  """The attacker's unlabelled public images, and their name."""
  choice = mi_flags.PUBLIC.value
  framed = tuple(dataset.input_shape) == (28, 28, 1)
  if choice == "auto":
    choice = "digits" if framed else "held_out"
  if choice == "held_out":
    return dataset.test.x, "held-out test split, unlabelled"
  if not framed:
    raise app.UsageError(f"--public=digits needs 28x28 one-channel data, "
                         f"got {dataset.input_shape}; use --public=held_out")
  digits = tfdp.data.load_digits()
  images = np.concatenate([digits.train.x, digits.test.x])
  return tfdp.data.fit_to_frame(images), "sklearn digits in 28x28"


def _train_target(dataset: tfdp.data.ImageDataset, private: tfdp.data.Split,
                  public_batch, run_dir: str):
  """(target, privacy facts): LeNet-5 trained as --target says."""
  target = mi_flags.TARGET.value
  norm = "public_batch" if target == "public_bn" else "none"
  model = tfdp.models.lenet5(norm, dataset.input_shape, dataset.num_classes)
  callbacks = [tf.keras.callbacks.TensorBoard(
      os.path.join(run_dir, "tensorboard", "target"))]
  epochs = training_flags.EPOCHS.value
  if target == "nonprivate":
    model.compile(
        optimizer=tf.keras.optimizers.Adam(_NONPRIVATE_LEARNING_RATE),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    model.fit(private.x, private.y, epochs=epochs,
              batch_size=training_flags.BATCH_SIZE.value, callbacks=callbacks,
              verbose=output_flags.VERBOSE.value)
    return model, {"epsilon": None, "noise_multiplier": 0.0}
  sampled = _training.sampled_batches(private.x, private.y)
  sigma = _training.noise_multiplier(sampled)
  accountant = _training.privacy_accountant(sigma, sampled)
  model = _training.compile_private(
      tfdp.make_private(model, public_data=public_batch), sigma)
  callbacks.append(tfdp.callbacks.PrivacyCallback(
      accountant, target_epsilon=privacy_flags.TARGET_EPSILON.value,
      log_dir=os.path.join(run_dir, "tensorboard", "target")))
  model.fit(sampled.dataset, epochs=epochs, callbacks=callbacks,
            verbose=output_flags.VERBOSE.value)
  spent = accountant.spent()
  return model, {"epsilon": spent.epsilon, "delta": spent.delta,
                 "noise_multiplier": sigma, "steps": spent.steps,
                 "accountant": spent.accountant, "sampling": spent.sampling}


def _gan_logger(run_dir: str, total: int):
  """Progress lines and TensorBoard scalars every --inversion_log_every."""
  writer = tf.summary.create_file_writer(
      os.path.join(run_dir, "tensorboard", "inversion_gan"))
  every = mi_flags.GAN_LOG_EVERY.value
  started = time.perf_counter()

  def log(step: int, metrics: Dict[str, float]) -> None:
    if step % every and step != total:
      return
    with writer.as_default():
      for name, value in metrics.items():
        tf.summary.scalar(name, value, step=step)
    print(f"  GAN step {step}/{total}: " +
          ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())) +
          f" ({time.perf_counter() - started:.0f} s)", flush=True)
  return log


def _save_grid(images: np.ndarray, columns: int, path: str) -> None:
  scale = max(1, 112 // images.shape[1])
  _report.save_image(tfdp.gan.evaluation.sample_grid(images, columns), path,
                     scale=scale)


def _markdown(settings, row, stages) -> str:
  lines = _report.header(_EXPERIMENT, settings)
  lines += [_report.markdown_table([row]), "",
            "## Attack stages (evaluation classifier)", "",
            _report.markdown_table([{"stage": name, **metrics}
                                    for name, metrics in stages.items()]), ""]
  return "\n".join(lines)


def _update_table(row: Dict[str, object]) -> str:
  """Adds the row to OUTPUT_DIR/model_inversion/rows.jsonl; rewrites
  table.md from every row there; returns table.md's path."""
  parent = os.path.join(output_flags.OUTPUT_DIR.value, _EXPERIMENT)
  rows_path = os.path.join(parent, "rows.jsonl")
  _report.append_json_line(rows_path, row)
  rows = [{column: row.get(column) for column in _TABLE_COLUMNS}
          for row in _report.read_json_lines(rows_path)]
  path = os.path.join(parent, "table.md")
  with open(path, "w") as f:
    f.write(_report.markdown_table(rows) + "\n")
  return path


class _Stopwatch:
  """Seconds per stage, printed as each ends."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}
    self._since = self._started = time.perf_counter()

  def lap(self, name: str) -> None:
    now = time.perf_counter()
    self.seconds[name] = round(now - self._since, 1)
    print(f"{name}: {self.seconds[name]} s", flush=True)
    self._since = now

  def total(self) -> float:
    return round(time.perf_counter() - self._started, 1)


def _attack(target: tf.keras.Model, dataset: tfdp.data.ImageDataset,
            public: np.ndarray, run_dir: str, watch: _Stopwatch):
  """PLG-MI against `target`: (selection, labels, GAN samples, reconstruction).

  `labels` are the classes of the GAN samples and reconstructions,
  --reconstructions_per_class of each, class 0 first.
  """
  seed = training_flags.SEED.value
  selection = tfdp.attacks.top_n_selection(
      target, public, n=min(mi_flags.TOP_N.value, len(public)),
      num_classes=dataset.num_classes)
  gan = tfdp.attacks.InversionGAN(
      target, dataset.input_shape, dataset.num_classes,
      width=mi_flags.GAN_WIDTH.value,
      inversion_weight=mi_flags.INVERSION_WEIGHT.value,
      d_steps=mi_flags.D_STEPS.value,
      batch_size=mi_flags.GAN_BATCH_SIZE.value, seed=seed)
  steps = mi_flags.GAN_STEPS.value
  gan.train(selection.images, selection.labels, steps,
            callback=_gan_logger(run_dir, steps))
  watch.lap("gan_s")
  labels = np.repeat(np.arange(dataset.num_classes),
                     mi_flags.RECONSTRUCTIONS_PER_CLASS.value)
  generated = gan.generator(
      [tf.random.stateless_normal([len(labels), gan.latent_dim], [seed, 1]),
       tf.constant(labels, tf.int32)], training=False).numpy()
  reconstruction = tfdp.attacks.reconstruct(
      gan.generator, target, labels,
      steps=mi_flags.RECONSTRUCTION_STEPS.value,
      learning_rate=mi_flags.RECONSTRUCTION_LEARNING_RATE.value, seed=seed)
  watch.lap("reconstruction_s")
  return selection, labels, generated, reconstruction


def _save_grids(run_dir: str, selection, generated: np.ndarray,
                reconstruction, num_classes: int) -> None:
  """reconstructions.png, gan_samples.png, public_top_n.png: a row a class."""
  per_class = mi_flags.RECONSTRUCTIONS_PER_CLASS.value
  _save_grid(reconstruction.images, per_class,
             os.path.join(run_dir, "reconstructions.png"))
  _save_grid(generated, per_class, os.path.join(run_dir, "gan_samples.png"))
  shown = min(per_class, len(selection.labels) // num_classes)
  first = np.concatenate([np.flatnonzero(selection.labels == k)[:shown]
                          for k in range(num_classes)])
  _save_grid(selection.images[first], shown,
             os.path.join(run_dir, "public_top_n.png"))


def _settings(dataset: tfdp.data.ImageDataset, private: tfdp.data.Split,
              public: np.ndarray, public_name: str,
              top_n: int) -> Dict[str, object]:
  return {
      "command": " ".join(["python -m experiments.model_inversion",
                           *sys.argv[1:]]),
      "dataset": dataset.name, "model": "LeNet-5 target",
      "private_train": len(private), "test": len(dataset.test),
      "public": public_name, "public_size": len(public), "top_n": top_n,
      "gan_steps": mi_flags.GAN_STEPS.value,
      "d_steps": mi_flags.D_STEPS.value,
      "gan_width": mi_flags.GAN_WIDTH.value,
      "inversion_weight": mi_flags.INVERSION_WEIGHT.value,
      "reconstruction_steps": mi_flags.RECONSTRUCTION_STEPS.value,
      "reconstructions_per_class": mi_flags.RECONSTRUCTIONS_PER_CLASS.value,
      "seed": training_flags.SEED.value}


def main(argv):
  del argv
  watch = _Stopwatch()
  tf.keras.utils.set_random_seed(training_flags.SEED.value)
  dataset = _data.load_dataset()
  private, public_batch = dataset.train, None
  if mi_flags.TARGET.value == "public_bn":
    public_batch, private = _data.public_slice(
        private, mi_flags.PUBLIC_BN_EXAMPLES.value)
  public, public_name = _public_images(dataset)
  run_dir = _report.run_directory(output_flags.OUTPUT_DIR.value, _EXPERIMENT)

  target, privacy = _train_target(dataset, private, public_batch, run_dir)
  _, target_accuracy = target.evaluate(dataset.test.x, dataset.test.y,
                                       verbose=0)
  print(f"target {mi_flags.TARGET.value}: test accuracy "
        f"{target_accuracy:.4f}, epsilon {privacy['epsilon']}", flush=True)
  watch.lap("target_s")
  evaluator = tfdp.gan.evaluation.train_classifier(
      private.x, private.y, num_classes=dataset.num_classes,
      epochs=mi_flags.EVALUATION_EPOCHS.value)
  _, evaluator_accuracy = evaluator.evaluate(dataset.test.x, dataset.test.y,
                                             verbose=0)
  watch.lap("evaluation_classifier_s")

  selection, labels, generated, reconstruction = _attack(
      target, dataset, public, run_dir, watch)

  def judged(images, image_labels):
    return tfdp.attacks.evaluate_reconstructions(
        evaluator, images, image_labels, private.x, private.y)

  stages = {"public top-n (pseudo-labels)": judged(selection.images,
                                                   selection.labels),
            "GAN samples (no latent search)": judged(generated, labels),
            "reconstructions": judged(reconstruction.images, labels),
            "held-out real images (reference)": judged(dataset.test.x,
                                                       dataset.test.y)}
  watch.lap("evaluation_s")
  _save_grids(run_dir, selection, generated, reconstruction,
              dataset.num_classes)

  attack = stages["reconstructions"]
  row = {"dataset": dataset.name, "public": public_name,
         "target": mi_flags.TARGET.value, "epsilon": privacy["epsilon"],
         "target_accuracy": float(target_accuracy),
         "attack_top1": attack["top1"], "attack_top5": attack["top5"],
         "knn_distance": attack["knn_distance"],
         "frechet_distance": attack["frechet_distance"],
         "public_top1": stages["public top-n (pseudo-labels)"]["top1"],
         "gan_samples_top1": stages["GAN samples (no latent search)"]["top1"],
         "held_out_knn_distance":
             stages["held-out real images (reference)"]["knn_distance"],
         "seed": training_flags.SEED.value,
         "run": os.path.basename(run_dir)}
  settings = _settings(dataset, private, public, public_name,
                       len(selection.labels) // dataset.num_classes)
  results = {"settings": settings, "row": row, "target": privacy,
             "target_accuracy": float(target_accuracy),
             "evaluation_classifier_accuracy": float(evaluator_accuracy),
             "stages": stages,
             "timings_s": {**watch.seconds, "total_s": watch.total()},
             "reconstruction_margin": {
                 "initial_mean": float(reconstruction.initial_loss.mean()),
                 "final_mean": float(reconstruction.final_loss.mean())}}
  _report.write_results(run_dir, results, _markdown(settings, row, stages))
  table = _update_table(row)
  print(_report.markdown_table([row]))
  print(f"\nEvaluation classifier test accuracy {evaluator_accuracy:.4f}; "
        f"total {watch.total()} s.\nResults and grids: {run_dir}\n"
        f"All runs: {table}")


if __name__ == "__main__":
  app.run(main)
