r"""DP-SGD with BatchNorm from public data, and PGD adversarial training.

Ports the comparison of Davody et al. (2020) and its adversarial follow-up:
a model (LeNet-5 by default) is trained with DP-SGD (fast per-example
clipping, Poisson sampling, PLD accounting) with one of three
normalisations after its convolutions:

  public_batch  tfdp.layers.PublicBatchNormalization: batch statistics from a
                small public batch only, fed through the model every step;
  group         GroupNormalization (per example);
  none          no normalisation.

The public batch is --public_size images taken out of the training split
(a fixed random slice, disjoint from the private examples, which are the rest)
or drawn from another .npz file (--public_source). It is
used for the normalisation statistics only (never for the loss), and only by
norm=public_batch; the privacy accounting covers the private examples alone.
With --robust, each private example is replaced, with probability
--adv_ratio, by its cleverhans PGD example against the current model before
clipping.

Each run reports clean test accuracy, robust accuracy under PGD and FGSM
(--pgd_norm, --pgd_epsilon) and the epsilon spent at --delta. --sweep runs
norm in --sweep_norms x noise in --noise_multipliers x --seeds (default
0,1,2) and writes a table of mean +- std over seeds and a plot of accuracy
against epsilon (one line per norm) under --results_dir; --compare_robust
runs every configuration with and without adversarial training.

  python -m experiments.dp_bn_robust --norm=group --noise_multiplier=1.5
  python -m experiments.dp_bn_robust --robust --target_epsilon=3
  python -m experiments.dp_bn_robust --sweep --results_dir=runs/sweep
  python -m experiments.dp_bn_robust --sweep --results_dir=runs/sweep \
      --resume   # after a crash or a kill: same flags
  python -m experiments.dp_bn_robust --sweep --noise_multipliers=1.5 \
      --compare_robust
  python -m experiments.dp_bn_robust --dataset=mnist --npz=PATH/mnist.npz \
      --sweep --epochs=5 --batch_size=128 --learning_rate=0.5

docs/dp_bn_robust.md has the commands behind the documented results.
"""

import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from experiments import _data
from experiments import _report
from experiments import _training
import flags as shared_flags
from flags import data as data_flags
from flags import privacy as privacy_flags
from flags import robust as robust_flags
from flags import training as training_flags
import tfdp

_NORMS = ("public_batch", "group", "none")
_MODELS = ("lenet5", "papernot", "resnet18")
_EXPERIMENT = "dp_bn_robust"

flags.set_default(training_flags.LEARNING_RATE, 0.25)
shared_flags.adopt_key_flags(data_flags, privacy_flags, robust_flags,
                            training_flags)

MODEL = flags.DEFINE_enum("model", "lenet5", _MODELS, "Architecture.")
NORM = flags.DEFINE_enum("norm", "public_batch", _NORMS,
                         "Normalisation after each convolution.")
ACTIVATION = flags.DEFINE_string(
    "activation", "tanh", "Activation of lenet5 and papernot.")
DENSE_NORM = flags.DEFINE_bool(
    "dense_norm", False, "lenet5: also normalise the two hidden dense layers.")
WIDTH = flags.DEFINE_float("width", 1.0,
                           "Channel multiplier of papernot and resnet18 "
                           "(> 0).")
PUBLIC_SIZE = flags.DEFINE_integer(
    "public_size", 128, "Size of the public batch for norm=public_batch.")
PUBLIC_SOURCE = flags.DEFINE_string(
    "public_source", "train",
    "'train': a random slice of --public_size training images (fixed by "
    "--split_seed), removed from the private set for every norm so that all "
    "runs train on the same private examples; or the path of an .npz file "
    "from whose images x --public_size are drawn (fixed by --split_seed) "
    "as the public batch, the training split then staying whole.")
SEEDS = flags.DEFINE_list(
    "seeds", None,
    "Seeds (model initialisation, batch sampling, PGD starts) to run; "
    "default --seed alone, or 0,1,2 with --sweep.")
SWEEP = flags.DEFINE_bool(
    "sweep", False,
    "Run --sweep_norms x --noise_multipliers x --seeds and write the table "
    "and plot of the comparison.")
SWEEP_NORMS = flags.DEFINE_list("sweep_norms", list(_NORMS),
                                "Normalisations compared by --sweep.")
NOISE_MULTIPLIERS = flags.DEFINE_list(
    "noise_multipliers", ["0.8", "1.5", "3.0"],
    "Noise multipliers compared by --sweep.")
COMPARE_ROBUST = flags.DEFINE_bool(
    "compare_robust", False,
    "Run every configuration both without and with adversarial training "
    "(same noise, hence same epsilon); overrides --robust.")
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", f"runs/{_EXPERIMENT}",
    "Where results.json, results.md (and accuracy_vs_epsilon.png) go.")
REPLOT = flags.DEFINE_bool(
    "replot", False,
    "Train nothing: rewrite results.md and the plot from the results.json "
    "already in --results_dir.")
RESUME = flags.DEFINE_bool(
    "resume", False,
    "Continue an interrupted run in --results_dir: finished configurations "
    "(runs.jsonl) are kept, the interrupted one continues from its last "
    "epoch's backup (model, optimizer slots and privacy accountant), the "
    "rest run. Use the same flags. Without it, --results_dir starts afresh.")
VERBOSE = flags.DEFINE_integer(
    "keras_verbose", 0, "Keras fit verbosity (0 silent, 2 one line per "
    "epoch).", lower_bound=0, upper_bound=2)

shared_flags.check_range(WIDTH, above=0)
shared_flags.check_range(SEEDS, at_least=0, number=int)
shared_flags.check_range(NOISE_MULTIPLIERS, at_least=0)


@dataclasses.dataclass(frozen=True)
class Data:
  """The private training set, the public batch and the test set."""
  name: str
  private: tfdp.data.Split
  public: np.ndarray
  test: tfdp.data.Split
  num_classes: int

  @property
  def input_shape(self):
    return tuple(self.private.x.shape[1:])


def load_data() -> Data:
  """The dataset, with the public batch split off as --public_source says."""
  dataset = _data.load_dataset()
  seed = data_flags.SPLIT_SEED.value
  size = PUBLIC_SIZE.value
  if size < 2:
    raise app.UsageError(f"--public_size must be >= 2, got {size}")
  train = dataset.train
  if PUBLIC_SOURCE.value == "train":
    if size >= len(train):
      raise app.UsageError(
          f"--public_size={size} leaves no private examples out of "
          f"{len(train)}")
    order = np.random.default_rng(seed).permutation(len(train))
    public = train.x[order[:size]]
    private = tfdp.data.Split(train.x[order[size:]], train.y[order[size:]])
  else:
    # load_npz validates and scales the file; its split is only a shuffle
    # here, both halves are drawn from.
    source = tfdp.data.load_npz(PUBLIC_SOURCE.value, test_fraction=0.5,
                                seed=seed)
    pool = np.concatenate([source.train.x, source.test.x])
    if len(pool) < size or pool.shape[1:] != train.x.shape[1:]:
      raise app.UsageError(
          f"--public_source {PUBLIC_SOURCE.value} must hold >= {size} images "
          f"of shape {train.x.shape[1:]}, got {pool.shape}")
    order = np.random.default_rng(seed).permutation(len(pool))
    public, private = pool[order[:size]], train
  return Data(name=dataset.name, private=private, public=public,
              test=dataset.test, num_classes=dataset.num_classes)


def build_model(norm: str, data: Data) -> tf.keras.Model:
  """--model with normalisation `norm` for the data's images and classes."""
  if MODEL.value == "lenet5":
    return tfdp.models.lenet5(norm, data.input_shape, data.num_classes,
                              activation=ACTIVATION.value,
                              dense_norm=DENSE_NORM.value)
  if MODEL.value == "resnet18":
    return tfdp.models.resnet18(data.input_shape, data.num_classes, norm=norm,
                                width=WIDTH.value)
  return tfdp.models.papernot_cnn(data.input_shape, data.num_classes,
                                  activation=ACTIVATION.value,
                                  width=WIDTH.value)


def _step_size(steps: int) -> float:
  """--pgd_step_size, or tfdp.robust's default for `steps` iterations."""
  if robust_flags.PGD_STEP_SIZE.value is not None:
    return robust_flags.PGD_STEP_SIZE.value
  epsilon = robust_flags.PGD_EPSILON.value
  return min(epsilon, 2.5 * epsilon / steps)


def adversarial_training() -> tfdp.robust.AdversarialTraining:
  steps = robust_flags.PGD_STEPS.value
  return tfdp.robust.AdversarialTraining(
      norm=robust_flags.PGD_NORM.value,
      epsilon=robust_flags.PGD_EPSILON.value,
      step_size=_step_size(steps),
      steps=steps,
      random_start=robust_flags.PGD_RANDOM_START.value,
      ratio=robust_flags.ADV_RATIO.value,
      clip_min=0.0, clip_max=1.0)


def evaluate(model: tf.keras.Model, data: Data) -> Dict[str, float]:
  """Clean accuracy on the test split, PGD and FGSM robust accuracy."""
  size = robust_flags.EVAL_SIZE.value or len(data.test)
  x, y = data.test.x[:size], data.test.y[:size]
  steps = robust_flags.EVAL_PGD_STEPS.value
  attack = dict(norm=robust_flags.PGD_NORM.value,
                epsilon=robust_flags.PGD_EPSILON.value, clip_min=0.0,
                clip_max=1.0)
  return {
      "clean_accuracy": float(tfdp.robust.clean_accuracy(
          model, data.test.x, data.test.y)),
      "pgd_accuracy": float(tfdp.robust.robust_accuracy(
          model, x, y, attack="pgd", steps=steps,
          step_size=_step_size(steps),
          random_start=True, **attack)),
      "fgsm_accuracy": float(tfdp.robust.robust_accuracy(
          model, x, y, attack="fgsm", **attack)),
  }


def noise_multipliers(sampled: tfdp.data.SampledDataset,
                      accounting: Dict[str, object]) -> List[float]:
  """The sweep's noise multipliers, or the flag's, or one calibrated."""
  if SWEEP.value:
    return [float(v) for v in NOISE_MULTIPLIERS.value]
  if privacy_flags.NOISE_MULTIPLIER.value is not None:
    return [privacy_flags.NOISE_MULTIPLIER.value]
  return [tfdp.privacy.calibrate_noise_multiplier(
      privacy_flags.TARGET_EPSILON.value, privacy_flags.DELTA.value,
      training_flags.EPOCHS.value * sampled.steps_per_epoch, **accounting)]


def _run_key(norm: str, noise_multiplier: float, seed: int,
             robust: bool) -> str:
  """One configuration of the sweep, as a directory name."""
  return (f"{norm}_{'pgd' if robust else 'clean'}_noise{noise_multiplier:g}"
          f"_seed{seed}")


def _finished_runs(path: str) -> Dict[str, Dict[str, object]]:
  """The runs recorded in runs.jsonl by key; with --resume only."""
  if not RESUME.value or not os.path.exists(path):
    return {}
  with open(path) as f:
    runs = [json.loads(line) for line in f if line.strip()]
  return {_run_key(r["norm"], r["noise_multiplier"], r["seed"], r["robust"]):
          r for r in runs}


def train_and_evaluate(data: Data, norm: str, noise_multiplier: float,
                       seed: int, robust: bool) -> Dict[str, object]:
  """One DP training run; returns its settings, accuracies and epsilon."""
  tf.keras.backend.clear_session()
  tf.keras.utils.set_random_seed(seed)
  started = time.perf_counter()
  batch_size = training_flags.BATCH_SIZE.value
  sampled = tfdp.data.poisson_batches(data.private.x, data.private.y,
                                      batch_size,
                                      seed=privacy_flags.SAMPLING_SEED.value)
  accountant = _training.privacy_accountant(noise_multiplier, sampled)
  model = _training.compile_private(
      tfdp.make_private(
          build_model(norm, data),
          public_data=data.public if norm == "public_batch" else None,
          adversarial=adversarial_training() if robust else None),
      noise_multiplier, batch_size)
  backup_dir = os.path.join(RESULTS_DIR.value, "backups",
                            _run_key(norm, noise_multiplier, seed, robust))
  model.fit(sampled.dataset, epochs=training_flags.EPOCHS.value,
            callbacks=[_report.backup_callback(backup_dir),
                       tfdp.callbacks.PrivacyCallback(accountant)],
            verbose=VERBOSE.value)
  trained = time.perf_counter()
  spent = accountant.spent()
  result = {
      "norm": norm,
      "robust": robust,
      "noise_multiplier": noise_multiplier,
      "epsilon": spent.epsilon,
      "seed": seed,
      **evaluate(model, data),
      "steps": spent.steps,
      "train_s": trained - started,
      "eval_s": time.perf_counter() - trained,
  }
  return result


def _mean_std(values: Sequence[float]) -> str:
  mean = statistics.fmean(values)
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{100 * mean:.1f} ± {100 * std:.1f}"


def summarize(runs: List[Dict[str, object]]) -> List[Dict[str, object]]:
  """Mean +- sample std over seeds per (norm, robust, noise multiplier)."""
  groups: Dict[tuple, List[Dict[str, object]]] = {}
  for run in runs:
    key = (run["norm"], run["robust"], run["noise_multiplier"])
    groups.setdefault(key, []).append(run)
  rows = []
  for (norm, robust, noise), members in groups.items():
    row = {"norm": norm, "PGD training": "yes" if robust else "no",
           "noise": noise, "epsilon": members[0]["epsilon"],
           "seeds": len(members)}
    for key, label in (("clean_accuracy", "clean acc. %"),
                       ("pgd_accuracy", "PGD acc. %"),
                       ("fgsm_accuracy", "FGSM acc. %")):
      values = [m[key] for m in members]
      row[label] = _mean_std(values)
      row[key + "_mean"] = statistics.fmean(values)
      row[key + "_std"] = (statistics.stdev(values) if len(values) > 1
                           else 0.0)
    rows.append(row)
  return rows


_COLORS = {"public_batch": "tab:blue", "group": "tab:orange",
           "none": "tab:green"}
_METRICS = (("clean_accuracy", "clean"), ("pgd_accuracy", "PGD"),
            ("fgsm_accuracy", "FGSM"))


def _label(row: Dict[str, object]) -> str:
  return row["norm"] + (" + PGD training" if row["PGD training"] == "yes"
                        else "")


def _plot_lines(summary, delta, plt, ticker):
  """Clean and PGD accuracy against epsilon, one line per configuration."""
  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  lines: Dict[str, List[Dict[str, object]]] = {}
  for row in summary:
    lines.setdefault(_label(row), []).append(row)
  for label, rows in lines.items():
    rows = sorted(rows, key=lambda r: r["epsilon"])
    robust = rows[0]["PGD training"] == "yes"
    eps = [r["epsilon"] for r in rows]
    for ax, (key, _) in zip(axes, _METRICS):
      ax.errorbar(eps, [100 * r[key + "_mean"] for r in rows],
                  yerr=[100 * r[key + "_std"] for r in rows],
                  marker="s" if robust else "o", capsize=3, label=label,
                  color=_COLORS[rows[0]["norm"]],
                  linestyle="--" if robust else "-")
  epsilons = sorted({row["epsilon"] for row in summary})
  for ax, title in zip(axes, ("clean test accuracy", "PGD robust accuracy")):
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(epsilons))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter(
        [f"{e:.3g}" for e in epsilons]))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(f"epsilon (delta = {delta:g})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
  axes[0].legend(fontsize="small")
  return figure


def _plot_bars(summary, delta, plt):
  """One epsilon: clean, PGD and FGSM accuracy per configuration, as bars."""
  figure, ax = plt.subplots(figsize=(1.6 + 1.4 * len(summary), 4))
  width = 0.8 / len(_METRICS)
  for index, (key, name) in enumerate(_METRICS):
    ax.bar([i + (index - 1) * width for i in range(len(summary))],
           [100 * r[key + "_mean"] for r in summary], width,
           yerr=[100 * r[key + "_std"] for r in summary], capsize=3,
           label=name)
  ax.set_xticks(range(len(summary)))
  ax.set_xticklabels([_label(r).replace(" + ", "\n+ ") for r in summary],
                     fontsize="small")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(f"epsilon = {summary[0]['epsilon']:.3g} (delta = {delta:g})")
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(fontsize="small")
  return figure


def plot(summary: List[Dict[str, object]], delta: float, path: str) -> None:
  """Accuracy against epsilon (or, for a single epsilon, bars) as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  if len({row["epsilon"] for row in summary}) > 1:
    figure = _plot_lines(summary, delta, plt, ticker)
  else:
    figure = _plot_bars(summary, delta, plt)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def _settings(data: Data) -> Dict[str, object]:
  steps = robust_flags.PGD_STEPS.value
  eval_steps = robust_flags.EVAL_PGD_STEPS.value
  return {
      "command": "python -m experiments." + _EXPERIMENT + " " + " ".join(
          sys.argv[1:]),
      "dataset": data.name,
      "private_examples": len(data.private),
      "public_examples": len(data.public),
      "public_source": PUBLIC_SOURCE.value,
      "test_examples": len(data.test),
      "evaluated_on": _data.evaluated_on(),
      "robust_eval_examples": min(robust_flags.EVAL_SIZE.value or
                                  len(data.test), len(data.test)),
      "model": MODEL.value,
      "activation": ACTIVATION.value,
      "dense_norm": DENSE_NORM.value,
      "epochs": training_flags.EPOCHS.value,
      "batch_size": training_flags.BATCH_SIZE.value,
      "learning_rate": training_flags.LEARNING_RATE.value,
      "momentum": training_flags.MOMENTUM.value,
      "l2_norm_clip": privacy_flags.L2_NORM_CLIP.value,
      "delta": privacy_flags.DELTA.value,
      "accountant": privacy_flags.ACCOUNTANT.value,
      "pgd_norm": robust_flags.PGD_NORM.value,
      "pgd_epsilon": robust_flags.PGD_EPSILON.value,
      "pgd_train_steps": steps,
      "pgd_train_step_size": _step_size(steps),
      "pgd_random_start": robust_flags.PGD_RANDOM_START.value,
      "adv_ratio": robust_flags.ADV_RATIO.value,
      "pgd_eval_steps": eval_steps,
      "pgd_eval_step_size": _step_size(eval_steps),
  }


def write_results(settings: Dict[str, object], runs: List[Dict[str, object]],
                  summary: List[Dict[str, object]]) -> str:
  """Writes results.json, results.md and the plot; returns the markdown."""
  results_dir = RESULTS_DIR.value
  os.makedirs(results_dir, exist_ok=True)
  shown = ("norm", "PGD training", "noise", "epsilon", "seeds",
           "clean acc. %", "PGD acc. %", "FGSM acc. %")
  per_run = ("norm", "robust", "noise_multiplier", "epsilon", "seed",
             "clean_accuracy", "pgd_accuracy", "fgsm_accuracy", "train_s",
             "eval_s")
  lines = _report.header(_EXPERIMENT, settings) + [
      "Accuracies in % as mean ± sample std over seeds; epsilon at "
      f"delta={settings['delta']:g} ({settings['accountant']}, Poisson "
      f"sampling). PGD and FGSM: L-{settings['pgd_norm']} ball of radius "
      f"{settings['pgd_epsilon']:g}.",
      "",
      _report.markdown_table([{k: r[k] for k in shown} for r in summary]),
      "",
      "## Runs",
      "",
      _report.markdown_table([{k: r[k] for k in per_run} for r in runs]),
      "",
  ]
  if len(summary) > 1:
    plot(summary, settings["delta"],
         os.path.join(results_dir, "accuracy_vs_epsilon.png"))
    lines += ["![accuracy against epsilon](accuracy_vs_epsilon.png)", ""]
  markdown = "\n".join(lines)
  _report.write_results(results_dir, {"settings": settings, "runs": runs,
                                      "summary": summary}, markdown)
  return markdown


def replot() -> None:
  """Rewrites results.md and the plot from --results_dir/results.json."""
  path = os.path.join(RESULTS_DIR.value, "results.json")
  with open(path) as f:
    results = json.load(f)
  write_results(results["settings"], results["runs"], results["summary"])
  print(f"Rewrote results.md and the plot in {RESULTS_DIR.value}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if REPLOT.value:
    replot()
    return
  seeds = SEEDS.value or (["0", "1", "2"] if SWEEP.value else
                          [str(training_flags.SEED.value)])
  seeds = [int(s) for s in seeds]
  norms = SWEEP_NORMS.value if SWEEP.value else [NORM.value]
  for norm in norms:
    if norm not in _NORMS:
      raise app.UsageError(f"--sweep_norms must be from {_NORMS}, got {norm}")
  if MODEL.value == "papernot" and norms != ["none"]:
    raise app.UsageError(
        "--model=papernot has no normalisation layers: use --norm=none (or "
        "--sweep_norms=none)")
  data = load_data()
  modes = [False, True] if COMPARE_ROBUST.value else [robust_flags.ROBUST.value]
  sampled = tfdp.data.poisson_batches(
      data.private.x, data.private.y, training_flags.BATCH_SIZE.value)
  accounting = dict(accountant=privacy_flags.ACCOUNTANT.value,
                    **sampled.accountant_kwargs())
  noises = noise_multipliers(sampled, accounting)

  print(f"{data.name}: {len(data.private)} private, {len(data.public)} "
        f"public, {len(data.test)} test examples; {MODEL.value}; noise "
        f"multipliers {noises}; seeds {seeds}", flush=True)
  runs_path = os.path.join(RESULTS_DIR.value, "runs.jsonl")
  finished = _finished_runs(runs_path)
  os.makedirs(RESULTS_DIR.value, exist_ok=True)
  if not RESUME.value:  # Afresh: no run, and no backup to restore from.
    open(runs_path, "w").close()
    shutil.rmtree(os.path.join(RESULTS_DIR.value, "backups"),
                  ignore_errors=True)
  runs = []
  for noise in noises:
    for norm in norms:
      for robust in modes:
        for seed in seeds:
          run = finished.get(_run_key(norm, noise, seed, robust))
          if run is None:
            run = train_and_evaluate(data, norm, noise, seed, robust)
            with open(runs_path, "a") as f:
              f.write(json.dumps(run) + "\n")
          runs.append(run)
          print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                          f"{k}={v}" for k, v in run.items()), flush=True)
  summary = summarize(runs)
  print(write_results(_settings(data), runs, summary))
  print(f"Results: {RESULTS_DIR.value}")


if __name__ == "__main__":
  app.run(main)
