r"""Public and synthetic data around DP-SGD: the ablation of docs/public_data.md.

The training split is divided, fixed by --split_seed, into a public slice
(--public_examples examples, used without privacy), a validation split
(--validation_fraction of the rest, never trained on: model selection reads
it) and the private training set; the test split is held out and only
reported. Each row of the ablation adds parts to plain DP-SGD:

  dpsgd              DP-SGD alone (make_private, Poisson sampling).
  warmup_public      + non-private warm-up on the public slice.
  warmup_synthetic   + warm-up on the public slice and --synthetic_size
                     images from a conditional GAN trained (non-privately)
                     on it (or --synthetic_npz).
  augmult4/16        warmup_public + augmentation multiplicity K = 4/16.
  dope, mirror       warmup_public + DOPE-SGD / Mirror-GD (a public batch
                     of --public_batch_size each step).
  ema                warmup_public + parameter EMA.
  augmult4_dope_ema  warmup_public + all three.

Each (row, epsilon) runs --seeds times; the noise multiplier is calibrated
so that --epochs of Poisson-sampled batches spend the epsilon at --delta.
results.md has mean and standard deviation of validation and test accuracy.

  python -m experiments.dp_public_data --rows=dpsgd,warmup_public --seeds=1
  python -m experiments.dp_public_data --dataset=mnist \
      --npz=../shared/data/mnist_test.npz          # docs/public_data.md
  python -m experiments.dp_public_data --dataset=cifar10 \
      --tfds_data_dir=DIR --model=wrn16_4 --public_examples=2000 \
      --augment_padding=4 --augment_flip --batch_size=4096 --epochs=30 \
      --l2_norm_clip=1 --learning_rate=1 --ema_momentum=0.999 \
      --synthetic_npz=edm_samples.npz               # GPU machine
"""

import dataclasses
import os
import sys
import time
from typing import Dict, List, Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from experiments import _data
from experiments import _report
from experiments import _training
import flags as shared_flags
from flags import data as data_flags
from flags import output as output_flags
from flags import privacy as privacy_flags
from flags import public_data as public_flags
from flags import training as training_flags
import tfdp

_EXPERIMENT = "dp_public_data"

flags.set_default(data_flags.VALIDATION_FRACTION, 0.1)
flags.set_default(training_flags.BATCH_SIZE, 256)
flags.set_default(training_flags.EPOCHS, 15)
flags.set_default(training_flags.LEARNING_RATE, 0.25)
flags.set_default(training_flags.MOMENTUM, 0.5)
flags.set_default(privacy_flags.L2_NORM_CLIP, 1.0)
shared_flags.adopt_key_flags(data_flags, output_flags, privacy_flags,
                             public_flags, training_flags)


@dataclasses.dataclass(frozen=True)
class Row:
  """What one ablation row adds to DP-SGD."""
  warmup: Optional[str] = None  # None, "public" or "synthetic".
  augmult: int = 1
  extender: Optional[str] = None  # None, "dope" or "mirror".
  ema: bool = False


ROWS: Dict[str, Row] = {
    "dpsgd": Row(),
    "warmup_public": Row(warmup="public"),
    "warmup_synthetic": Row(warmup="synthetic"),
    # Each further part alone on the public warm-up, then together.
    "augmult4": Row(warmup="public", augmult=4),
    "augmult16": Row(warmup="public", augmult=16),
    "dope": Row(warmup="public", extender="dope"),
    "mirror": Row(warmup="public", extender="mirror"),
    "ema": Row(warmup="public", ema=True),
    "augmult4_dope_ema": Row(warmup="public", augmult=4, extender="dope",
                             ema=True),
}


@dataclasses.dataclass
class Data:
  public: tfdp.data.Split
  private: tfdp.data.Split
  validation: tfdp.data.Split
  test: tfdp.data.Split
  num_classes: int
  name: str


def _split_data() -> Data:
  """Public slice, private training set, validation and held-out test."""
  dataset, validation = _data.load_with_validation()
  size = public_flags.PUBLIC_EXAMPLES.value
  if size >= len(dataset.train):
    raise app.UsageError(f"--public_examples={size} leaves no private "
                         f"examples out of {len(dataset.train)}")
  private, public = tfdp.data.split(dataset.train, size / len(dataset.train),
                                    seed=data_flags.SPLIT_SEED.value)
  return Data(public, private, validation, dataset.test, dataset.num_classes,
              dataset.name)


def _model(data: Data) -> tf.keras.Model:
  shape = data.private.x.shape[1:]
  if public_flags.MODEL.value == "wrn16_4":
    return tfdp.models.wide_resnet(16, 4, shape, data.num_classes,
                                   weight_standardization=True)
  return tfdp.models.papernot_cnn(shape, data.num_classes,
                                  width=public_flags.WIDTH.value)


def _synthetic(data: Data, seed: int, run_dir: str) -> tfdp.data.Split:
  """--synthetic_npz, or samples of a GAN trained on the public slice.

  The GAN never sees private data, so neither its samples nor the warm-up
  on them cost privacy. Samples are written to RUN_DIR/synthetic-SEED.npz.
  """
  if public_flags.SYNTHETIC_NPZ.value:
    return tfdp.data.read_npz(public_flags.SYNTHETIC_NPZ.value)
  path = os.path.join(run_dir, f"synthetic-{seed}.npz")
  if not os.path.exists(path):
    tf.keras.utils.set_random_seed(seed)
    public = data.public
    batch = min(64, len(public))
    gan = tfdp.gan.DPGAN.build(
        "mlp", public.x.shape[1:], num_classes=data.num_classes,
        mode="none", allow_no_dp=True, noise_multiplier=0.0,
        expected_batch_size=batch, dataset_size=len(public))
    batches = iter(tfdp.data.fixed_size_batches(
        public.x, public.y, batch, seed=seed).dataset.repeat())
    logging.info("Training the synthetic-data GAN on %d public images",
                 len(public))
    gan.train(batches, public_flags.GAN_STEPS.value)
    labels = np.arange(public_flags.SYNTHETIC_SIZE.value) % data.num_classes
    images = np.clip(gan.generate(labels), 0.0, 1.0)
    tfdp.data.write_npz(path, images, labels)
  return tfdp.data.read_npz(path)


def _warm_up(model: tf.keras.Model, warmup: tfdp.data.Split) -> None:
  """Non-private SGD on public (or synthetic) data only: no privacy cost."""
  model.compile(
      optimizer=tf.keras.optimizers.SGD(
          public_flags.WARMUP_LEARNING_RATE.value, momentum=0.9),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"])
  model.fit(warmup.x, warmup.y,
            batch_size=public_flags.WARMUP_BATCH_SIZE.value,
            epochs=public_flags.WARMUP_EPOCHS.value, verbose=0)


def _private_options(row: Row, data: Data, seed: int) -> Dict[str, object]:
  options: Dict[str, object] = {}
  if row.augmult > 1:
    options.update(augmult=row.augmult,
                   augment=tfdp.data.augment.crop_and_flip(
                       public_flags.AUGMENT_PADDING.value,
                       flip=public_flags.AUGMENT_FLIP.value, seed=seed))
  if row.extender is not None:
    public = (data.public.x, data.public.y)
    batch = min(public_flags.PUBLIC_BATCH_SIZE.value, len(data.public))
    options["public_gradient"] = (
        tfdp.public_gradients.DOPE(*public, batch_size=batch, seed=seed)
        if row.extender == "dope" else
        tfdp.public_gradients.Mirror(
            *public, private_weight=public_flags.MIRROR_WEIGHT.value,
            batch_size=batch, seed=seed))
  return options


def _run(name: str, epsilon: float, seed: int, data: Data,
         run_dir: str) -> Dict[str, object]:
  """Trains one (row, epsilon, seed) and measures it."""
  row = ROWS[name]
  started = time.perf_counter()
  tf.keras.utils.set_random_seed(seed)
  model = _model(data)
  if row.warmup == "public":
    _warm_up(model, data.public)
  elif row.warmup == "synthetic":
    synthetic = _synthetic(data, seed, run_dir)
    _warm_up(model, tfdp.data.Split(
        np.concatenate([data.public.x, synthetic.x]),
        np.concatenate([data.public.y, synthetic.y])))
  tf.keras.utils.set_random_seed(seed)
  sampled = tfdp.data.poisson_batches(
      data.private.x, data.private.y, training_flags.BATCH_SIZE.value,
      seed=seed)
  steps = training_flags.EPOCHS.value * sampled.steps_per_epoch
  noise = tfdp.privacy.calibrate_noise_multiplier(
      epsilon, privacy_flags.DELTA.value, steps,
      **_training.accounting(sampled))
  accountant = _training.privacy_accountant(noise, sampled)
  model = _training.compile_private(
      tfdp.make_private(model, **_private_options(row, data, seed)), noise,
      **({"use_ema": True, "ema_momentum": public_flags.EMA_MOMENTUM.value}
         if row.ema else {}))
  model.fit(sampled.dataset, epochs=training_flags.EPOCHS.value,
            callbacks=[tfdp.callbacks.PrivacyCallback(accountant)], verbose=0)
  spent = accountant.spent()
  if spent.epsilon > epsilon * (1 + 1e-6):
    raise RuntimeError(f"spent epsilon {spent.epsilon} > target {epsilon}")
  return {
      "row": name, "target_epsilon": epsilon, "seed": seed,
      "epsilon": spent.epsilon, "noise_multiplier": noise,
      "steps": spent.steps,
      "validation_accuracy": _accuracy(model, data.validation),
      "test_accuracy": _accuracy(model, data.test),
      "seconds": time.perf_counter() - started,
  }


def _accuracy(model: tf.keras.Model, split: tfdp.data.Split) -> float:
  predictions = model.predict(split.x, batch_size=1024, verbose=0)
  return float(np.mean(np.argmax(predictions, axis=1) == split.y))


def _summary(runs: List[Dict[str, object]]) -> List[Dict[str, object]]:
  """Mean and standard deviation over seeds of each (row, epsilon)."""
  table = []
  order = list(ROWS)
  for name in sorted({r["row"] for r in runs}, key=order.index):
    for epsilon in sorted({r["target_epsilon"] for r in runs}):
      group = [r for r in runs
               if r["row"] == name and r["target_epsilon"] == epsilon]
      if not group:
        continue
      entry = {"row": name, "epsilon": epsilon, "seeds": len(group)}
      for key in ("validation_accuracy", "test_accuracy"):
        values = 100 * np.array([r[key] for r in group])
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        entry[key] = float(values.mean())
        entry[key.replace("_accuracy", " acc (%)")] = (
            f"{values.mean():.2f} ± {spread:.2f}")
      entry["s/run"] = float(np.mean([r["seconds"] for r in group]))
      table.append(entry)
  return table


def _selection(summary: List[Dict[str, object]]) -> List[str]:
  """Per epsilon: the row with the best validation accuracy, against dpsgd.

  The choice reads validation accuracy only; the test accuracies are then
  reported for the chosen row and for plain DP-SGD.
  """
  lines = []
  for epsilon in dict.fromkeys(e["epsilon"] for e in summary):
    entries = [e for e in summary if e["epsilon"] == epsilon]
    best = max(entries, key=lambda e: e["validation_accuracy"])
    plain = [e for e in entries if e["row"] == "dpsgd"]
    line = (f"- epsilon {epsilon:g}: best on validation is {best['row']}, "
            f"test {best['test_accuracy']:.2f}%")
    if plain:
      gain = best["test_accuracy"] - plain[0]["test_accuracy"]
      line += (f" against {plain[0]['test_accuracy']:.2f}% for dpsgd "
               f"({gain:+.2f} points)")
    lines.append(line)
  return lines


def _table(summary: List[Dict[str, object]]) -> str:
  hidden = ("validation_accuracy", "test_accuracy")
  return _report.markdown_table([{k: v for k, v in e.items()
                                  if k not in hidden} for e in summary])


def main(argv):
  del argv
  names = public_flags.ROWS.value or list(ROWS)
  unknown = sorted(set(names) - set(ROWS))
  if unknown:
    raise app.UsageError(f"--rows: unknown {unknown}; choose from "
                         f"{', '.join(ROWS)}")
  data = _split_data()
  run_dir = _report.run_directory(output_flags.OUTPUT_DIR.value, _EXPERIMENT,
                                  resume=output_flags.RESUME.value)
  epsilons = [float(e) for e in public_flags.EPSILONS.value]
  seeds = range(training_flags.SEED.value,
                training_flags.SEED.value + public_flags.SEEDS.value)
  # One line per finished run: --resume skips those, a crash loses one run.
  log_path = os.path.join(run_dir, "runs.jsonl")
  runs = _report.read_json_lines(log_path)
  done = {(r["row"], r["target_epsilon"], r["seed"]) for r in runs}
  for name in names:
    for epsilon in epsilons:
      for seed in seeds:
        if (name, epsilon, seed) in done:
          continue
        runs.append(_run(name, epsilon, seed, data, run_dir))
        _report.append_json_line(log_path, runs[-1])
        print(f"{name} eps={epsilon:g} seed={seed}: validation "
              f"{runs[-1]['validation_accuracy']:.4f}, test "
              f"{runs[-1]['test_accuracy']:.4f} "
              f"({runs[-1]['seconds']:.0f} s)", flush=True)
  # Read back: another process may have added runs to the same log (two
  # shares of the rows run side by side, the second with --resume).
  runs = _report.read_json_lines(log_path)
  summary = _summary(runs)
  settings = {"command": " ".join(["python -m experiments." + _EXPERIMENT] +
                                  sys.argv[1:]),
              "dataset": data.name, "model": public_flags.MODEL.value,
              "public": len(data.public), "private": len(data.private),
              "validation": len(data.validation), "test": len(data.test)}
  markdown = "\n".join(_report.header(_EXPERIMENT, settings) +
                       [_table(summary), "", "Model selection (validation "
                        "accuracy only):", ""] + _selection(summary) + [""])
  _report.write_results(run_dir, {"settings": settings, "runs": runs,
                                  "summary": summary}, markdown)
  print(markdown)
  print(f"Results: {run_dir}")


if __name__ == "__main__":
  app.run(main)
