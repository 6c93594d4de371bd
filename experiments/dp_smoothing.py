r"""DP-SGD with Gaussian noise augmentation, certified by randomized smoothing.

The sound path beside StoBatch (issue 11): a classifier f is trained with
DP-SGD (`tfdp.make_private`: per-example clipping, Gaussian noise, Poisson
sampling, epsilon from dp_accounting) on inputs to which
`tfdp.robust.GaussianAugmentation` adds N(0, --train_sigma^2 I) per example
and step; then its smoothed classifier g(x) = argmax_k P(f(x + e) = k),
e ~ N(0, --smoothing_sigma^2 I), is evaluated on --eval_size test points
with Cohen et al.'s PREDICT and CERTIFY (`tfdp.robust.smoothing`):
conventional accuracy, certified accuracy at L2 --radii (input units:
pixels in [0, 1]), accuracy under L2 PGD of each radius (cleverhans, crafted
against f, or against a soft smoothed surrogate with --pgd_target=smoothed),
and the soundness check: how many points certified at a radius the attack of
that radius flips. The noise multiplier is calibrated so that --epochs spend
--target_epsilon (at --delta); smoothing is post-processing of the trained
model and costs no privacy. Writes results.json, results.md and
certified_accuracy.png under --results_dir and prints the table.

  python -m experiments.dp_smoothing                       # digits, ~1 min
  python -m experiments.dp_smoothing --dataset=mnist \
      --npz=../shared/data/mnist_test.npz --target_epsilon=2 \
      --results_dir=runs/dp_smoothing/mnist_eps2
  python -m experiments.dp_smoothing --dataset=mnist \
      --npz=../shared/data/mnist_test.npz --validation_fraction=0.125 ...
                                                           # model selection
  python -m experiments.dp_smoothing --combine=DIR1,DIR2 --results_dir=DIR
                                                           # one table

docs/dp_smoothing.md has the documented runs and the hyper-parameter search.
"""

import json
import os
import time
from typing import Any, Dict, List

from absl import app
from absl import flags
import tensorflow as tf

from experiments import _data
from experiments import _distributed
from experiments import _report
from experiments import _training
import flags as shared_flags
from flags import data as data_flags
from flags import distributed as distributed_flags
from flags import output as output_flags
from flags import privacy as privacy_flags
from flags import robust as robust_flags
from flags import training as training_flags
import tfdp

_EXPERIMENT = "dp_smoothing"

flags.set_default(training_flags.EPOCHS, 20)
flags.set_default(training_flags.BATCH_SIZE, 256)
flags.set_default(training_flags.LEARNING_RATE, 1.0)
flags.set_default(privacy_flags.TARGET_EPSILON, 2.0)
flags.set_default(robust_flags.EVAL_SIZE, 500)
flags.set_default(output_flags.VERBOSE, 0)
shared_flags.adopt_key_flags(data_flags, privacy_flags, training_flags,
                             distributed_flags,
                             exclude=distributed_flags.INTERNAL)
for _flag in (robust_flags.EVAL_SIZE, robust_flags.EVAL_PGD_STEPS,
              output_flags.VERBOSE):
  flags.declare_key_flag(_flag.name)

MODEL = flags.DEFINE_enum(
    "model", "lenet5", ["lenet5", "papernot"],
    "Base classifier: tfdp.models.lenet5 (no normalisation) or "
    "tfdp.models.papernot_cnn.")
ACTIVATION = flags.DEFINE_string("activation", "tanh",
                                 "Activation of the hidden layers.")
WIDTH = flags.DEFINE_float("width", 1.0,
                           "Channel multiplier of papernot (> 0).")
TRAIN_SIGMA = flags.DEFINE_float(
    "train_sigma", 0.25,
    "Std of the Gaussian noise added to every training input (per example "
    "and step), in pixel units of images in [0, 1]; 0 trains on clean "
    "inputs.")
SMOOTHING_SIGMA = flags.DEFINE_float(
    "smoothing_sigma", None,
    "Std of the smoothing noise at certification (> 0); default "
    "--train_sigma.")
RADII = flags.DEFINE_list(
    "radii", ["0.1", "0.2", "0.4", "0.5", "1.0"],
    "L2 radii, in pixel units, for certified accuracy, the PGD attacks and "
    "the soundness check.")
NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", 1000,
    "Noise draws n per test point to bound pA (CERTIFY) and to predict "
    "(PREDICT); the largest radius it can certify is sigma * "
    "Phi^-1(alpha^(1/n)).", lower_bound=1)
SELECTION_SAMPLES = flags.DEFINE_integer(
    "selection_samples", 100,
    "Noise draws n0 per test point to select CERTIFY's class.",
    lower_bound=1)
ATTACK_VOTES = flags.DEFINE_integer(
    "attack_votes", 500,
    "Noise draws per attacked point to decide the smoothed prediction "
    "there.", lower_bound=1)
ALPHA = flags.DEFINE_float(
    "alpha", 0.001,
    "Failure probability of each certificate and prediction, in (0, 1).")
PGD_TARGET = flags.DEFINE_enum(
    "pgd_target", "base", ["base", "smoothed"],
    "What PGD differentiates: the base classifier f, or the soft smoothed "
    "surrogate log E[softmax f(x + e)] with --pgd_noise_samples draws per "
    "step (stronger, --pgd_noise_samples times dearer).")
PGD_NOISE_SAMPLES = flags.DEFINE_integer(
    "pgd_noise_samples", 8,
    "Noise draws per PGD step with --pgd_target=smoothed.", lower_bound=1)
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", f"runs/{_EXPERIMENT}",
    "Where results.json, results.md and certified_accuracy.png go.")
COMBINE = flags.DEFINE_list(
    "combine", None,
    "Train nothing: read results.json from each of these directories and "
    "write one table and one plot of certified accuracy against radius to "
    "--results_dir (results.md, certified_accuracy.png).")

shared_flags.check_range(WIDTH, above=0)
shared_flags.check_range(TRAIN_SIGMA, at_least=0)
shared_flags.check_range(SMOOTHING_SIGMA, above=0)
shared_flags.check_range(RADII, above=0)
shared_flags.check_range(ALPHA, above=0, below=1)


def build_model(dataset: tfdp.data.ImageDataset) -> tf.keras.Model:
  """--model for the dataset's images and classes (logits)."""
  if MODEL.value == "papernot":
    return tfdp.models.papernot_cnn(dataset.input_shape,
                                    dataset.num_classes,
                                    activation=ACTIVATION.value,
                                    width=WIDTH.value)
  return tfdp.models.lenet5("none", dataset.input_shape, dataset.num_classes,
                            activation=ACTIVATION.value)


def train(dataset: tfdp.data.ImageDataset,
          strategy: tf.distribute.Strategy) -> Dict[str, Any]:
  """DP-SGD with Gaussian augmentation; returns the model and the privacy."""
  sampled = _training.sampled_batches(dataset.train.x, dataset.train.y,
                                      strategy)
  noise = _training.noise_multiplier(sampled)
  accountant = _training.privacy_accountant(noise, sampled)
  augmentation = (tfdp.robust.GaussianAugmentation(TRAIN_SIGMA.value)
                  if TRAIN_SIGMA.value > 0 else None)
  with strategy.scope():
    model = _training.compile_private(
        tfdp.make_private(build_model(dataset), augmentation=augmentation),
        noise)
  model.fit(sampled.dataset, epochs=training_flags.EPOCHS.value,
            steps_per_epoch=sampled.steps_per_epoch,
            callbacks=[tfdp.callbacks.PrivacyCallback(accountant)],
            verbose=output_flags.VERBOSE.value)
  spent = accountant.spent()
  return {"model": model, "noise_multiplier": noise,
          "epsilon": spent.epsilon, "delta": spent.delta,
          "accountant": spent.accountant, "sampling": spent.sampling,
          "steps": spent.steps}


def _smoothing_sigma() -> float:
  if SMOOTHING_SIGMA.value is not None:
    return SMOOTHING_SIGMA.value
  if TRAIN_SIGMA.value > 0:
    return TRAIN_SIGMA.value
  raise app.UsageError("--train_sigma=0 needs --smoothing_sigma > 0")


def summary_row(results: Dict[str, Any]) -> Dict[str, Any]:
  """One row of the combined table: privacy, accuracy, certificates, PGD."""
  settings, evaluation = results["settings"], results["evaluation"]
  row = {"epsilon": results["epsilon"],
         "train sigma": settings["train_sigma"],
         "smoothing sigma": evaluation["sigma"],
         "base acc.": results["base_test_accuracy"],
         "smoothed acc.": evaluation["accuracy"]}
  for radius, value in evaluation["certified_accuracy"].items():
    row[f"cert. r={radius}"] = value
  for radius, attacked in evaluation["pgd"].items():
    row[f"PGD r={radius}"] = attacked["accuracy"]
  row["certified / flipped"] = ", ".join(
      f"{a['certified']}/{a['flipped']}" for a in evaluation["pgd"].values())
  row["train s"] = results["train_s"]
  row["eval s"] = results["eval_s"]
  return row


def radius_table(evaluation: Dict[str, Any]) -> str:
  """Per radius: certified and PGD accuracy, and the soundness counts."""
  return _report.markdown_table([
      {"L2 radius": radius,
       "certified acc.": evaluation["certified_accuracy"][radius],
       "PGD acc. (smoothed g)": attacked["accuracy"],
       "PGD acc. (base f)": attacked["base_accuracy"],
       "certified": attacked["certified"],
       "flipped by PGD": attacked["flipped"]}
      for radius, attacked in evaluation["pgd"].items()])


def markdown(results: Dict[str, Any]) -> str:
  """results.md of one run."""
  settings, evaluation = results["settings"], results["evaluation"]
  target = ("the base classifier f" if evaluation["attack_noise_samples"] == 0
            else "the soft smoothed surrogate (" +
            f"{evaluation['attack_noise_samples']} draws per step)")
  return "\n".join(_report.header(_EXPERIMENT, settings) + [
      f"DP-SGD, epsilon = {results['epsilon']:.4g} at delta = "
      f"{results['delta']:g} ({results['accountant']}, {results['sampling']} "
      f"sampling, noise multiplier {results['noise_multiplier']:.4g}, "
      f"{results['steps']} steps), Gaussian augmentation sigma = "
      f"{settings['train_sigma']:g}. Smoothing sigma = "
      f"{evaluation['sigma']:g}; radii are L2 in pixel units of images in "
      "[0, 1].", "",
      f"Base classifier f (no noise), whole {settings['evaluated_on']} split "
      f"({settings['test_examples']}): accuracy "
      f"{results['base_test_accuracy']:.4f}. On the first "
      f"{evaluation['examples']} {settings['evaluated_on']} points: smoothed "
      f"classifier g (PREDICT, n = {evaluation['n']}, alpha = "
      f"{evaluation['alpha']:g}, abstentions wrong) accuracy "
      f"{evaluation['accuracy']:.4f} ({evaluation['abstained']:.4f} "
      f"abstained); f accuracy {evaluation['base_accuracy']:.4f}; average "
      f"certified radius {evaluation['average_certified_radius']:.4f}.", "",
      f"Certificates: CERTIFY (n0 = {evaluation['n0']}, n = "
      f"{evaluation['n']}, confidence {1 - evaluation['alpha']:g}). PGD: L2, "
      f"{evaluation['attack_steps']} steps, crafted against {target}; judged "
      f"by g with {evaluation['attack_votes']} votes. Soundness: points "
      "certified at the radius / those whose attack of that radius changes "
      "g's top vote (0 expected).", "",
      radius_table(evaluation), "",
      f"Training {results['train_s']:.0f} s, evaluation "
      f"{results['eval_s']:.0f} s.", "",
      "![certified accuracy against radius](certified_accuracy.png)", ""])


def _curve(results: Dict[str, Any]) -> Dict[float, float]:
  evaluation = results["evaluation"]
  return {0.0: evaluation["accuracy"],
          **{float(r): a for r, a in
             evaluation["certified_accuracy"].items()}}


def _label(results: Dict[str, Any]) -> str:
  return (f"epsilon {results['epsilon']:.3g}, sigma "
          f"{results['evaluation']['sigma']:g}")


def plot(runs: List[Dict[str, Any]], path: str) -> None:
  _report.plot_curves(
      {_label(r): _curve(r) for r in runs}, path,
      xlabel="L2 radius (pixels in [0, 1])",
      ylabel="certified accuracy (radius 0: smoothed accuracy)",
      title="DP-SGD + Gaussian augmentation, randomized smoothing")


def combine(directories: List[str]) -> None:
  """One table and plot from the results.json of several runs."""
  runs = []
  for directory in directories:
    with open(os.path.join(directory, "results.json")) as f:
      runs.append(json.load(f))
  table = _report.markdown_table([summary_row(r) for r in runs])
  lines = [f"# {_EXPERIMENT}: combined", "",
           "Runs: " + ", ".join(f"`{d}`" for d in directories), "",
           "Accuracies as fractions; certified / flipped: per radius, points "
           "certified at it and those flipped by PGD of that radius.", "",
           table, "",
           "![certified accuracy against radius](certified_accuracy.png)", ""]
  os.makedirs(RESULTS_DIR.value, exist_ok=True)
  with open(os.path.join(RESULTS_DIR.value, "results.md"), "w") as f:
    f.write("\n".join(lines))
  plot(runs, os.path.join(RESULTS_DIR.value, "certified_accuracy.png"))
  print(table)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if COMBINE.value:
    combine(COMBINE.value)
    return
  sigma = _smoothing_sigma()
  strategy, results_dir = _distributed.start(
      lambda: _report.made_directory(RESULTS_DIR.value))
  dataset = _data.load_dataset()
  tf.keras.utils.set_random_seed(training_flags.SEED.value)
  started = time.perf_counter()
  trained = train(dataset, strategy)
  model = trained.pop("model")
  train_s = time.perf_counter() - started
  if not _distributed.is_chief():
    return  # The chief certifies the (identical) model and writes.
  print(f"{dataset.name}: {len(dataset.train)} training examples; epsilon "
        f"{trained['epsilon']:.4g} after {trained['steps']} steps "
        f"({train_s:.0f} s); evaluating", flush=True)

  size = min(robust_flags.EVAL_SIZE.value or len(dataset.test),
             len(dataset.test))
  base_accuracy = tfdp.robust.clean_accuracy(model, dataset.test.x,
                                             dataset.test.y)
  evaluation = tfdp.robust.smoothing.evaluate(
      model, dataset.test.x[:size], dataset.test.y[:size], sigma=sigma,
      radii=[float(r) for r in RADII.value],
      num_classes=dataset.num_classes, n0=SELECTION_SAMPLES.value,
      n=NUM_SAMPLES.value, alpha=ALPHA.value,
      attack_steps=robust_flags.EVAL_PGD_STEPS.value,
      attack_noise_samples=(PGD_NOISE_SAMPLES.value
                            if PGD_TARGET.value == "smoothed" else 0),
      attack_votes=ATTACK_VOTES.value, seed=training_flags.SEED.value)
  results = {
      "settings": {
          "command": _distributed.user_command(
              "experiments." + _EXPERIMENT),
          "dataset": dataset.name,
          "train_examples": len(dataset.train),
          "test_examples": len(dataset.test),
          "evaluated_on": _data.evaluated_on(),
          "model": MODEL.value,
          "activation": ACTIVATION.value,
          "epochs": training_flags.EPOCHS.value,
          "batch_size": training_flags.BATCH_SIZE.value,
          "learning_rate": training_flags.LEARNING_RATE.value,
          "momentum": training_flags.MOMENTUM.value,
          "l2_norm_clip": privacy_flags.L2_NORM_CLIP.value,
          "target_epsilon": privacy_flags.TARGET_EPSILON.value,
          "train_sigma": TRAIN_SIGMA.value,
          "pgd_target": PGD_TARGET.value,
          "seed": training_flags.SEED.value,
          "replicas": strategy.num_replicas_in_sync,
      },
      **trained,
      "base_test_accuracy": base_accuracy,
      "evaluation": evaluation,
      "train_s": train_s,
      "eval_s": time.perf_counter() - started - train_s,
  }
  text = markdown(results)
  _report.write_results(results_dir, results, text)
  plot([results], os.path.join(results_dir, "certified_accuracy.png"))
  print(text)
  print(f"Results: {results_dir}")


if __name__ == "__main__":
  app.run(main)
