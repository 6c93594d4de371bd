r"""StoBatch on MNIST: DP and certifiably robust training over N replicas.

Trains the StoBatch MNIST architecture (tfdp.stobatch.models, "mnist") with
the DP auto-encoder first layer, the noisy Taylor output loss and DP
adversarial examples (I-FGSM, MIM, PGD), one fixed disjoint batch per
replica per step, then evaluates conventional accuracy, robust accuracy
(FGSM, I-FGSM, MIM, PGD) and certified accuracy at --kappas. --mode=test
restores the latest checkpoint and evaluates only. Writes results.json and
results.md under --results_dir, TensorBoard logs under
RESULTS_DIR/tensorboard.

  python -m experiments.stobatch_mnist --dataset=digits --steps=200
  python -m experiments.stobatch_mnist --dataset=../shared/data/mnist_test.npz \
      --gpus=4 --steps=2000 --epsilon_ae=1 --epsilon_out=1
  python -m experiments.stobatch_mnist --mode=test --results_dir=runs/sb
  python -m experiments.stobatch_mnist --dataset=digits --workers=2

--workers=N runs N worker processes under MultiWorkerMirroredStrategy
(docs/distributed.md), one replica each: the same fixed batches and fixed
noise on every worker (the chief's, broadcast), checkpoints written by the
chief and restored by all (a rerun resumes), evaluation by the chief.

Inputs: images in [0, 1] become 2x - 1 in [-1, 1] and are resized to 28x28
(digits: bilinear from 8x8) or centre-cropped (larger images); see
tfdp.stobatch.models.to_architecture_input.
"""

import json
import os
import time
from typing import Any, Dict, Sequence

from absl import app

from experiments import _distributed
from experiments import _report
import flags as shared_flags
from flags import distributed as distributed_flags
from flags import stobatch as sb_flags

shared_flags.adopt_key_flags(sb_flags, distributed_flags,
                             exclude=distributed_flags.INTERNAL)

_DEFAULT_ATTACK_SIZE = {"mnist": 1.0, "cifar10": 0.5, "tinyimagenet": 0.1}
# Defaults on digits (1,437 training images of 8x8), for flags not given:
# the images at their own size (the architectures' 28x28 would cost 12x
# the compute for no new information), 3 attack iterations, 30 steps and
# 20 votes on each attacked input (votes on attacks x kappas inputs were
# 3/4 of the evaluation; the certificate keeps --num_samples);
# the batch size is the largest that leaves 2 fixed batches per replica
# (`digits_batch_size`). With `--gpus=4 --allow_cpu_replicas` the CIFAR-10
# architecture reaches 87.5% in 8.4 minutes on 2 CPU cores
# (docs/stobatch.md).
DIGITS_DEFAULTS = {"input_side": 8, "steps": 30, "attack_steps": 3,
                   "attack_votes": 20}


def digits_batch_size(train_examples: int, replicas: int) -> int:
  """The largest m with 2 fixed batches per replica: n // (2 N).

  The output noise scales as Delta3 / m, so on a small training set the
  largest batch gives the least noise per coefficient.
  """
  return max(1, train_examples // (2 * replicas))


def _check_worker_flags() -> None:
  """Several workers: each runs its own devices, and training only."""
  if sb_flags.GPUS.value != 1 or sb_flags.ALLOW_CPU_REPLICAS.value:
    raise app.UsageError(
        "--workers (or TF_CONFIG): each worker runs one replica per local "
        "GPU, or one on its CPU, under MultiWorkerMirroredStrategy; leave "
        "--gpus and --allow_cpu_replicas out")
  if sb_flags.MODE.value != "train":
    raise app.UsageError("--mode=test evaluates in one process: drop "
                         "--workers")


def setting(flag, dataset: str, default=None):
  """`flag`'s value; on digits, unless given, DIGITS_DEFAULTS' or `default`."""
  if flag.present or dataset != "digits":
    return flag.value
  if default is not None:
    return default
  return DIGITS_DEFAULTS.get(flag.name, flag.value)


def load_dataset(dataset: str):
  """--dataset (digits, mnist, cifar10, tinyimagenet, .npz) per the flags."""
  # pylint: disable=g-import-not-at-top
  from tfdp import data
  # pylint: enable=g-import-not-at-top
  if dataset == "digits":
    return data.load_digits(test_fraction=sb_flags.TEST_FRACTION.value,
                            seed=sb_flags.DATA_SEED.value)
  if dataset in ("mnist", "cifar10"):
    return data.load_tfds(dataset, data_dir=sb_flags.DATA_DIR.value)
  if dataset == "tinyimagenet":
    if not sb_flags.DATA_DIR.value:
      raise app.UsageError("--dataset=tinyimagenet needs --data_dir, the "
                           "tiny-imagenet-200 folder")
    return data.load_tiny_imagenet(sb_flags.DATA_DIR.value,
                                   num_classes=sb_flags.NUM_CLASSES.value,
                                   max_per_class=sb_flags.MAX_PER_CLASS.value)
  if dataset.endswith(".npz"):
    return data.load_npz(dataset, test_fraction=sb_flags.TEST_FRACTION.value,
                         seed=sb_flags.DATA_SEED.value)
  raise app.UsageError(f"--dataset must be digits, mnist, cifar10, "
                       f"tinyimagenet or an .npz path, got {dataset!r}")


def run(architecture: str, default_dataset: str) -> Dict[str, Any]:
  """Parses nothing (absl did): builds, trains and/or evaluates, writes."""
  # The strategy first: logical CPU replicas need TensorFlow's devices
  # uninitialised.
  # pylint: disable=g-import-not-at-top
  from tfdp.stobatch import replicas
  results_dir = sb_flags.RESULTS_DIR.value
  if distributed_flags.WORKERS.value > 1 or _distributed.in_cluster():
    _check_worker_flags()
    strategy, results_dir = _distributed.start(
        lambda: _report.made_directory(results_dir))
  else:
    try:
      strategy = replicas.replica_strategy(sb_flags.GPUS.value,
                                           sb_flags.ALLOW_CPU_REPLICAS.value)
    except ValueError as error:
      raise app.UsageError(str(error)) from error
  import tensorflow as tf
  from tfdp.stobatch import evaluation
  from tfdp.stobatch import models
  from tfdp.stobatch import trainer as trainer_lib
  # pylint: enable=g-import-not-at-top

  dataset = sb_flags.DATASET.value or default_dataset
  ds = load_dataset(dataset)
  side = setting(sb_flags.INPUT_SIDE, dataset)
  x_train = models.to_architecture_input(ds.train.x, architecture, side=side)
  x_test = models.to_architecture_input(ds.test.x, architecture, side=side)
  if sb_flags.EVAL_SIZE.value > 0:
    x_test = x_test[:sb_flags.EVAL_SIZE.value]
  y_test = ds.test.y[:len(x_test)]
  batch_size = setting(
      sb_flags.BATCH_SIZE, dataset,
      digits_batch_size(len(x_train), strategy.num_replicas_in_sync))
  batches = trainer_lib.FixedBatches(
      x_train, ds.train.y, batch_size, seed=sb_flags.SEED.value,
      augmentation_multiplicity=sb_flags.AUGMENTATION_MULTIPLICITY.value)

  with strategy.scope():
    model, budget = models.build_stobatch_model(
        architecture, num_classes=ds.num_classes,
        epsilon_ae=sb_flags.EPSILON_AE.value,
        epsilon_out=sb_flags.EPSILON_OUT.value,
        batch_size=batch_size, channels=x_train.shape[-1],
        seed=sb_flags.SEED.value, noise_seed=sb_flags.NOISE_SEED.value,
        side=side, weights_path=sb_flags.WEIGHTS_PATH.value,
        num_batches=batches.num_batches,
        forward_noise=sb_flags.FORWARD_NOISE.value)
  max_attack = (sb_flags.MAX_ATTACK_SIZE.value
                or _DEFAULT_ATTACK_SIZE[architecture])
  config = trainer_lib.TrainerConfig(
      learning_rate=sb_flags.LEARNING_RATE.value, alpha=sb_flags.ALPHA.value,
      max_attack_size=max_attack,
      attack_steps=setting(sb_flags.ATTACK_STEPS, dataset),
      seed=sb_flags.SEED.value, noise_seed=sb_flags.NOISE_SEED.value,
      min_curvature=sb_flags.MIN_CURVATURE.value,
      input_noise=sb_flags.TRAIN_INPUT_NOISE.value,
      input_noise_scale=sb_flags.TRAIN_INPUT_NOISE_SCALE.value)
  trainer = trainer_lib.StoBatchTrainer(model, strategy, config)

  checkpoint_dir = (sb_flags.CHECKPOINT_DIR.value
                    or os.path.join(results_dir, "checkpoints"))
  log_dir = os.path.join(_distributed.private_dir(results_dir),
                         "tensorboard")
  os.makedirs(results_dir, exist_ok=True)
  print(trainer.privacy_statement())
  devices = _devices(strategy)
  print(f"{strategy.num_replicas_in_sync} replica(s) on {devices}")

  started = time.time()
  history = []
  if sb_flags.MODE.value == "train":
    history = trainer.fit(batches, setting(sb_flags.STEPS, dataset),
                          checkpoint_dir=checkpoint_dir,
                          checkpoint_every=sb_flags.CHECKPOINT_EVERY.value,
                          log_dir=log_dir,
                          log_every=sb_flags.LOG_EVERY.value)
    step = int(trainer.optimizer.iterations.numpy())
  else:
    step = trainer_lib.restore_latest(trainer, checkpoint_dir)
  train_seconds = time.time() - started
  if not _distributed.is_chief():
    return {}  # The chief evaluates the (identical) model and writes.

  kappas = [float(k) for k in sb_flags.KAPPAS.value]
  noise_scale = sb_flags.INFERENCE_NOISE_SCALE.value
  if noise_scale is None and sb_flags.TRAIN_INPUT_NOISE.value != "none":
    noise_scale = sb_flags.TRAIN_INPUT_NOISE_SCALE.value
  try:
    result = evaluation.evaluate(
        model, x_test, y_test, kappas=kappas,
        attacks=tuple(sb_flags.EVAL_ATTACKS.value),
        attack_steps=sb_flags.EVAL_ATTACK_STEPS.value,
        num_samples=sb_flags.NUM_SAMPLES.value,
        alpha=sb_flags.CERT_ALPHA.value, noise_scale=noise_scale,
        norm=sb_flags.EVAL_NORM.value,
        certificate=sb_flags.CERTIFICATE.value,
        attack_votes=setting(sb_flags.ATTACK_VOTES, dataset))
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  write_summaries(log_dir, step, result, budget.epsilon)

  output = {
      "experiment": f"stobatch_{architecture}",
      "command": _distributed.user_command(
          f"experiments.stobatch_{architecture}"),
      "mode": sb_flags.MODE.value,
      "dataset": ds.name,
      "architecture": architecture,
      "replicas": strategy.num_replicas_in_sync,
      "devices": devices,
      "steps": step,
      "train_seconds": train_seconds,
      "batch_size": budget.batch_size,
      "train_examples": int(len(x_train)),
      "epsilon": budget.epsilon,
      "epsilon_ae": budget.epsilon_ae,
      "epsilon_out": budget.epsilon_out,
      "budget": {k: float(v) for k, v in vars(budget).items()},
      "privacy_statement": trainer.privacy_statement(),
      "history": history[-5:],
      "evaluation": result,
  }
  write_outputs(results_dir, output, _markdown(output),
                ("replicas", "steps", "epsilon"))
  return output


def write_outputs(results_dir: str, output: Dict[str, Any], markdown: str,
                  headline: Sequence[str]) -> None:
  """Writes results.json and results.md; prints the headline and the table."""
  _report.write_json(os.path.join(results_dir, "results.json"), output)
  with open(os.path.join(results_dir, "results.md"), "w") as f:
    f.write(markdown)
  print(json.dumps({k: output[k] for k in headline}))
  print(markdown)


def write_summaries(log_dir: str, step: int, result: Dict[str, Any],
                    epsilon: float) -> None:
  """TensorBoard scalars of an evaluation result and the epsilon."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.summary.create_file_writer(log_dir).as_default(step=step):
    tf.summary.scalar("eval/conventional_accuracy",
                      result["conventional_accuracy"])
    for kappa, value in result["certified_accuracy"].items():
      tf.summary.scalar(f"eval/certified_accuracy/kappa_{kappa}", value)
    for attack, by_kappa in result["robust_accuracy"].items():
      for kappa, value in by_kappa.items():
        tf.summary.scalar(f"eval/robust_accuracy/{attack}/kappa_{kappa}",
                          value)
    tf.summary.scalar("privacy/epsilon", epsilon)


def metric_table(result: Dict[str, Any]) -> str:
  """Certified and robust accuracy per kappa (and soundness) as markdown."""
  kappas = list(result["certified_accuracy"])
  rows = [{"metric": "certified accuracy",
           **{f"kappa={k}": result["certified_accuracy"][k] for k in kappas}}]
  for attack, by_kappa in result["robust_accuracy"].items():
    rows.append({"metric": f"robust accuracy ({attack})",
                 **{f"kappa={k}": by_kappa.get(k, float("nan"))
                    for k in kappas}})
  if result["soundness"]:
    rows.append({"metric": "certified / flipped by PGD",
                 **{f"kappa={k}": (f"{result['soundness'][k]['certified']}"
                                   f" / {result['soundness'][k]['flipped']}")
                    for k in kappas}})
  return _report.markdown_table(rows)


def _devices(strategy):
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy: one replica, default device.
    return ["default"]


def report(output: Dict[str, Any], setting: str, accuracy: str) -> str:
  """results.md: title, command, setting, accuracy, table, privacy."""
  return "\n".join([
      f"# {output['experiment']} on {output['dataset']}", "",
      f"`{output['command']}`", "",
      setting, "",
      accuracy, "",
      metric_table(output["evaluation"]), "",
      "```", output["privacy_statement"], "```", ""])


def _markdown(output: Dict[str, Any]) -> str:
  result = output["evaluation"]
  return report(
      output,
      f"{output['replicas']} replica(s), {output['steps']} steps, batch "
      f"{output['batch_size']} per replica, epsilon = "
      f"{output['epsilon_ae']:g} + {output['epsilon_out']:g} = "
      f"{output['epsilon']:g} (pure DP; assumptions and caveats below).",
      f"Conventional accuracy (expected vote, {result['num_samples']} draws, "
      f"{_report.inference_noise(result)} on the input): "
      f"{result['conventional_accuracy']:.4f}; without input noise: "
      f"{result['base_accuracy']:.4f}; {result['examples']} test examples; "
      f"{result.get('attack_votes', result['num_samples'])} draws decide "
      f"each attacked input; "
      f"attacks and certificate in L-{result['norm']}, confidence "
      f"{1 - result['alpha']:g}.")


def main(argv):
  del argv
  run("mnist", "digits")


if __name__ == "__main__":
  app.run(main)
