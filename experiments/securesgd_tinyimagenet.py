r"""SecureSGD on Tiny ImageNet: HGM first layer + DP-SGD, Gaussian certificates.

StoBatch's baseline (Phan et al., IJCAI 2019): a 7x7/2-64 conv whose L2
sensitivity per unit attack is kept <= --first_layer_sensitivity (a kernel
constraint), fresh Gaussian noise from the Heterogeneous Gaussian Mechanism
on its output (sigma = hgm_sigma(sensitivity * --hgm_attack_size,
--epsilon_hgm, --delta_hgm)), the ResNet-18-GN body and head of the StoBatch
Tiny ImageNet architecture, all trained with DP-SGD (tfdp.make_private,
DPAdam, --sampling batches, tfdp's accountant). Then: conventional accuracy
(expected vote over --num_samples noise draws), robust accuracy under
--eval_attacks, certified accuracy at --kappas (Gaussian PixelDP bound).
Checkpoints (model, optimizer, accountant) every --checkpoint_every steps
and when the run stops; a run restarted with the same flags resumes up to
--steps. --mode=test restores the checkpoint and evaluates.
Writes results.json and results.md under --results_dir, TensorBoard logs
under RESULTS_DIR/tensorboard. See docs/tinyimagenet.md.

  python -m experiments.securesgd_tinyimagenet \
      --data_dir=PATH/tiny-imagenet-200 --steps=2000 --target_epsilon=2
  python -m experiments.securesgd_tinyimagenet --dataset=digits \
      --input_side=32 --steps=2 --batch_size=4 --eval_size=4 --num_samples=4

Privacy: the training data is protected by DP-SGD's (epsilon, delta) alone
(every weight is trained by it). The HGM's (epsilon_hgm, delta_hgm) is with
respect to changes of one input of size <= --hgm_attack_size: it is the
robustness side, a different neighbouring relation, reported next to it,
not added to it.
"""

import os
import sys
import time
from typing import Any, Dict

from absl import app
from absl import flags

from experiments import stobatch_mnist
import flags as shared_flags
from flags import privacy as privacy_flags
from flags import securesgd as ss_flags
from flags import stobatch as sb_flags

# StoBatch's own flags (defined by flags/stobatch.py): refused here rather
# than silently ignored.
_STOBATCH_ONLY = ("allow_cpu_replicas", "epsilon_ae", "epsilon_out", "alpha",
                  "max_attack_size", "attack_steps",
                  "augmentation_multiplicity", "noise_seed",
                  "inference_noise_scale", "log_every", "min_curvature",
                  "forward_noise", "train_input_noise",
                  "train_input_noise_scale", "certificate")

shared_flags.adopt_key_flags(privacy_flags, ss_flags, sb_flags,
                             exclude=_STOBATCH_ONLY)


def _check_flags() -> None:
  used = [f"--{name}" for name in _STOBATCH_ONLY if flags.FLAGS[name].present]
  if used:
    raise app.UsageError(f"{', '.join(used)}: StoBatch flag(s), not used by "
                         "securesgd_tinyimagenet")
  if sb_flags.GPUS.value != 1:
    raise app.UsageError(f"--gpus={sb_flags.GPUS.value}: "
                         "securesgd_tinyimagenet runs one replica")


def _privacy_statement(epsilon: float, delta: float, steps: int,
                       noise_multiplier: float, first_layer) -> str:
  return (
      f"Training data: ({epsilon:.4g}, {delta:g})-DP by DP-SGD "
      f"({privacy_flags.ACCOUNTANT.value} accountant, "
      f"{privacy_flags.SAMPLING.value} sampling, {steps} steps, noise "
      f"multiplier {noise_multiplier:.4g}, clip "
      f"{privacy_flags.L2_NORM_CLIP.value:g}); it covers every weight.\n"
      f"First hidden layer: HGM, Gaussian sigma {first_layer.sigma:.4g}, "
      f"({first_layer.epsilon:g}, {first_layer.delta:g})-DP with respect to "
      f"a change of one input of size <= {first_layer.attack_size:g} in "
      f"L-{first_layer.norm} (sensitivity {first_layer.sensitivity:g} per "
      "unit attack, kept by a kernel constraint): the robustness guarantee "
      "behind the certificates, not a guarantee for the training data; the "
      "two are not added.")


def _train(model, sampled, accountant, steps: int, checkpoint,
           checkpoint_path: str, log_dir: str) -> None:
  """DP-SGD up to `steps` in total, checkpointing every --checkpoint_every.

  Each chunk is one `fit` whose `PrivacyCallback` saves at its end; an
  interrupted run saves what it has before stopping.
  """
  import tfdp  # pylint: disable=g-import-not-at-top
  every = sb_flags.CHECKPOINT_EVERY.value
  callback = tfdp.callbacks.PrivacyCallback(
      accountant, log_dir=log_dir, checkpoint_path=checkpoint_path)
  try:
    while accountant.steps < steps:
      chunk = accountant.steps // every
      model.fit(sampled.dataset.repeat(), initial_epoch=chunk,
                epochs=chunk + 1,
                steps_per_epoch=min(every, steps - accountant.steps),
                verbose=0, callbacks=[callback])
  finally:
    if accountant.steps:
      checkpoint.write(checkpoint_path)


def run() -> Dict[str, Any]:
  """Parses nothing (absl did): builds, trains and/or evaluates, writes."""
  _check_flags()
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tfdp
  from tfdp.stobatch import models
  from tfdp.stobatch import securesgd
  # pylint: enable=g-import-not-at-top

  ds = stobatch_mnist.load_dataset(sb_flags.DATASET.value or "tinyimagenet")
  side = sb_flags.INPUT_SIDE.value
  x_train = models.to_architecture_input(ds.train.x, "tinyimagenet",
                                         side=side)
  x_test = models.to_architecture_input(ds.test.x, "tinyimagenet", side=side)
  if sb_flags.EVAL_SIZE.value > 0:
    x_test = x_test[:sb_flags.EVAL_SIZE.value]
  y_test = ds.test.y[:len(x_test)]
  norm = sb_flags.EVAL_NORM.value
  seed = sb_flags.SEED.value
  try:
    model, first_layer = securesgd.build_securesgd_model(
        num_classes=ds.num_classes, epsilon=ss_flags.EPSILON_HGM.value,
        delta=ss_flags.DELTA_HGM.value,
        attack_size=ss_flags.HGM_ATTACK_SIZE.value, norm=norm,
        sensitivity=ss_flags.FIRST_LAYER_SENSITIVITY.value,
        side=x_train.shape[1], channels=x_train.shape[-1],
        weights_path=sb_flags.WEIGHTS_PATH.value, seed=seed)
  except (ValueError, FileNotFoundError) as error:
    raise app.UsageError(str(error)) from error

  batch_size = sb_flags.BATCH_SIZE.value
  sampler = (tfdp.data.poisson_batches
             if privacy_flags.SAMPLING.value == "poisson"
             else tfdp.data.fixed_size_batches)
  sampled = sampler(x_train, ds.train.y, batch_size,
                    seed=privacy_flags.SAMPLING_SEED.value)
  delta = privacy_flags.DELTA.value
  steps = sb_flags.STEPS.value
  accounting = dict(accountant=privacy_flags.ACCOUNTANT.value,
                    **sampled.accountant_kwargs())
  noise_multiplier = privacy_flags.NOISE_MULTIPLIER.value
  if noise_multiplier is None:
    noise_multiplier = tfdp.privacy.calibrate_noise_multiplier(
        privacy_flags.TARGET_EPSILON.value, delta, max(steps, 1),
        **accounting)
  accountant = tfdp.privacy.PrivacyAccountant(noise_multiplier, delta,
                                              **accounting)
  model = tfdp.make_private(model)
  model.compile(
      optimizer=tfdp.optimizers.DPAdam(
          learning_rate=sb_flags.LEARNING_RATE.value,
          l2_norm_clip=privacy_flags.L2_NORM_CLIP.value,
          noise_multiplier=noise_multiplier, expected_batch_size=batch_size),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, reduction=tf.keras.losses.Reduction.NONE))

  results_dir = sb_flags.RESULTS_DIR.value
  checkpoint_dir = (sb_flags.CHECKPOINT_DIR.value
                    or os.path.join(results_dir, "checkpoints"))
  checkpoint_path = os.path.join(checkpoint_dir, "securesgd")
  log_dir = os.path.join(results_dir, "tensorboard")
  os.makedirs(results_dir, exist_ok=True)
  started = time.time()
  checkpoint = tf.train.Checkpoint(model=model, accountant=accountant)
  found = tf.io.gfile.exists(checkpoint_path + ".index")
  if sb_flags.MODE.value == "test" and not found:
    raise app.UsageError(f"--mode=test: no checkpoint at {checkpoint_path}"
                         " (train first, with the same flags)")
  if found:
    # Every variable of the model and the accountant must come back (a
    # stopped run resumes with the steps it spent); the optimizer's come
    # back when training builds them.
    checkpoint.read(checkpoint_path).assert_existing_objects_matched()
  if sb_flags.MODE.value == "train":
    _train(model, sampled, accountant, steps, checkpoint, checkpoint_path,
           log_dir)
  train_seconds = time.time() - started
  spent = accountant.spent()
  statement = _privacy_statement(spent.epsilon, delta, spent.steps,
                                 noise_multiplier, first_layer)
  print(statement)

  kappas = [float(k) for k in sb_flags.KAPPAS.value]
  try:
    result = securesgd.evaluate(
        model, x_test, y_test, kappas=kappas,
        attacks=tuple(sb_flags.EVAL_ATTACKS.value),
        attack_steps=sb_flags.EVAL_ATTACK_STEPS.value,
        num_samples=sb_flags.NUM_SAMPLES.value,
        alpha=sb_flags.CERT_ALPHA.value, norm=norm)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  stobatch_mnist.write_summaries(log_dir, spent.steps, result, spent.epsilon)

  output = {
      "experiment": "securesgd_tinyimagenet",
      "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
      "mode": sb_flags.MODE.value,
      "dataset": ds.name,
      "steps": spent.steps,
      "train_seconds": train_seconds,
      "batch_size": batch_size,
      "train_examples": int(len(x_train)),
      "epsilon": spent.epsilon,
      "delta": delta,
      "noise_multiplier": noise_multiplier,
      "l2_norm_clip": privacy_flags.L2_NORM_CLIP.value,
      "accountant": privacy_flags.ACCOUNTANT.value,
      "sampling": privacy_flags.SAMPLING.value,
      "hgm": {k: (float(v) if isinstance(v, (int, float)) else v)
              for k, v in vars(first_layer).items()},
      "privacy_statement": statement,
      "evaluation": result,
  }
  stobatch_mnist.write_outputs(results_dir, output, _markdown(output),
                               ("steps", "epsilon", "delta"))
  return output


def _markdown(output: Dict[str, Any]) -> str:
  result = output["evaluation"]
  hgm = output["hgm"]
  return stobatch_mnist.report(
      output,
      f"{output['steps']} DP-SGD steps, expected batch "
      f"{output['batch_size']}, ({output['epsilon']:.4g}, "
      f"{output['delta']:g})-DP for the training data; HGM on the first "
      f"layer: sigma {hgm['sigma']:.4g}, ({hgm['epsilon']:g}, "
      f"{hgm['delta']:g}) for input changes <= {hgm['attack_size']:g} "
      f"(L-{hgm['norm']}).",
      f"Conventional accuracy (expected vote, {result['num_samples']} "
      f"draws): {result['conventional_accuracy']:.4f}; without the noise: "
      f"{result['base_accuracy']:.4f}; {result['examples']} test examples; "
      f"attacks and certificate in L-{result['norm']} (sensitivity "
      f"{result['sensitivity']:.4g} per unit attack), confidence "
      f"{1 - result['alpha']:g}.")


def main(argv):
  del argv
  run()


if __name__ == "__main__":
  app.run(main)
