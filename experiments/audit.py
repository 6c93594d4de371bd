r"""Privacy audit: empirical epsilon lower bounds and membership inference.

For each claimed epsilon (--claimed_epsilons, at --delta):

  whitebox   Dirac gradient canaries through tfdp's own DP-SGD trainer
             (tfdp.audit.whitebox): --runs_per_side runs with the canary in
             and as many out (many runs), and one run with --canaries
             canaries each in with probability 1/2 (one run). A run is
             --audit_steps steps at sampling probability
             --audit_sampling_probability.
  blackbox   --blackbox_canaries mislabeled test images, each in with
             probability 1/2, one DP training run (--epochs), scored by
             their loss on the final model (tfdp.audit.blackbox).

Negative controls (--negative_controls, white-box, many runs, claiming
--control_epsilon): the same trainer with the noise silently off, with
clipping off, and with every one of 2 replicas adding the average's noise
(sigma C / B) to its share of the sum. Each must score above its claim.
Membership inference (--membership): TF Privacy's attacks and LiRA on an
overfitted non-private model and on the DP models, members being a
training subset the size of the test split.

--trainer=dp_gan audits tfdp.gan's MLP DP-GAN black-box: held-out images as
canaries, scored by the discriminator's "real" logit. --trainer=stobatch
audits tfdp.stobatch's MNIST network black-box, claiming its pure
epsilon_ae + epsilon_out.

  python -m experiments.audit --trainer=dpsgd --dataset=digits
  python -m experiments.audit --dataset=mnist \
      --npz=../shared/data/mnist_test.npz       # docs/audit.md
  python -m experiments.audit --mode=blackbox --negative_controls= \
      --nomembership
  python -m experiments.audit --trainer=dp_gan --mode=blackbox \
      --negative_controls= --nomembership      # or --trainer=stobatch

results.md has the table, audit.png the lower bounds against the claimed
epsilons with the line y = x.
"""

import dataclasses
import sys
import time
from typing import Callable, Dict, List, Optional

from absl import app
import numpy as np
import tensorflow as tf

from experiments import _audit_faults
from experiments import _data
from experiments import _report
from experiments import _training
import flags as shared_flags
from flags import audit as audit_flags
from flags import data as data_flags
from flags import output as output_flags
from flags import privacy as privacy_flags
from flags import training as training_flags
import tfdp

shared_flags.adopt_key_flags(audit_flags, data_flags, output_flags,
                             privacy_flags, training_flags,
                             exclude=("resume", "sampling", "sampling_seed",
                                      "target_epsilon", "noise_multiplier",
                                      "validation_fraction"))

_EXPERIMENT = "audit"
_PUBLIC_EXAMPLES = 128  # The public batch of dpsgd_public_bn.


@dataclasses.dataclass(frozen=True)
class _Data:
  """The private training set, the test split, and a public batch."""
  x: np.ndarray
  y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  public: Optional[np.ndarray]
  input_shape: tuple
  num_classes: int
  name: str


def _load() -> _Data:
  dataset = _data.load_dataset()
  train, public = dataset.train, None
  if audit_flags.TRAINER.value == "dpsgd_public_bn":
    public, train = _data.public_slice(train, _PUBLIC_EXAMPLES)
  return _Data(train.x, train.y, dataset.test.x, dataset.test.y, public,
               dataset.input_shape, dataset.num_classes, dataset.name)


def _model_fn(data: _Data,
              private: bool = True) -> Callable[[], tf.keras.Model]:
  """The audited trainer's classifier (a fresh one per call)."""
  if audit_flags.TRAINER.value == "dpsgd_public_bn":
    # Outside DP training nothing feeds the public batch: no normalisation.
    norm = "public_batch" if private else "none"
    return lambda: tfdp.models.lenet5(norm, data.input_shape,
                                      data.num_classes)
  return lambda: tfdp.models.mlp(data.input_shape, data.num_classes)


def _calibrated(epsilon: float, steps: int, q: float) -> float:
  return tfdp.privacy.calibrate_noise_multiplier(
      epsilon, privacy_flags.DELTA.value, steps, sampling_probability=q,
      accountant=privacy_flags.ACCOUNTANT.value)


def _claimed(sigma: float, steps: int, q: float) -> float:
  """The accountant's epsilon for what ran."""
  return tfdp.privacy.compute_epsilon(
      sigma, steps, privacy_flags.DELTA.value, sampling_probability=q,
      accountant=privacy_flags.ACCOUNTANT.value).epsilon


def _progress(label: str):
  started = time.perf_counter()

  def report(done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
      print(f"  {label}: {done}/{total} runs "
            f"({time.perf_counter() - started:.0f} s)", flush=True)
  return report


def _row(mode: str, method: str, trainer: str, claimed: float,
         bound: tfdp.audit.bounds.AuditBound, sigma: Optional[float],
         runs: int, seconds: float, q: Optional[float], steps: int,
         test_accuracy: Optional[float] = None) -> Dict[str, object]:
  """A result row; sigma and q are None where the trainer has none."""
  return {"mode": mode, "method": method, "trainer": trainer,
          "claimed_epsilon": claimed, "lower_bound": bound.epsilon,
          "confidence": bound.confidence, "noise_multiplier": sigma,
          "sampling_probability": q, "steps": steps, "runs": runs,
          "counts": f"{bound.true_positives}/{bound.positives}, "
                    f"{bound.false_positives}/{bound.negatives}",
          "test_accuracy": test_accuracy, "seconds": round(seconds, 1)}


def _setting(epsilon: float, rows: float):
  """(setting, q): the audited runs' DP-SGD on about `rows` rows."""
  steps = audit_flags.AUDIT_STEPS.value
  batch = max(1, round(audit_flags.AUDIT_SAMPLING_PROBABILITY.value * rows))
  q = min(1.0, batch / rows)
  return tfdp.audit.whitebox.DPSGDSetting(
      noise_multiplier=_calibrated(epsilon, steps, q),
      l2_norm_clip=privacy_flags.L2_NORM_CLIP.value, batch_size=batch,
      steps=steps, learning_rate=audit_flags.AUDIT_LEARNING_RATE.value), q


def _whitebox_many(data: _Data, epsilon: float, fault: str = "none",
                   strategy=None) -> Dict[str, object]:
  """Many runs with one Dirac canary, the trainer under `fault`."""
  # Calibrated on the in-world's rows: N real + 1 canary.
  setting, q = _setting(epsilon, len(data.x) + 1)
  batch, steps, sigma = (setting.batch_size, setting.steps,
                         setting.noise_multiplier)
  fault_kwargs = {"scale": 1.0 / batch} if fault == "replica_noise" else {}
  started = time.perf_counter()
  with _audit_faults.FAULTS[fault](**fault_kwargs):
    runs = tfdp.audit.whitebox.DPSGDRuns(
        _model_fn(data), data.x, data.y, setting,
        input_shape=data.input_shape, num_classes=data.num_classes,
        public_data=data.public, strategy=strategy)
    result = tfdp.audit.whitebox.many_runs_audit(
        runs, runs_per_side=audit_flags.RUNS_PER_SIDE.value,
        delta=privacy_flags.DELTA.value,
        confidence=audit_flags.CONFIDENCE.value, seed=training_flags.SEED.value,
        progress=_progress(f"white-box {fault} eps={epsilon:g}"))
  trainer = audit_flags.TRAINER.value + ("" if fault == "none" else
                                         f" + {fault}")
  return _row("whitebox", "many runs", trainer, _claimed(sigma, steps, q),
              result.bound, sigma, result.runs,
              time.perf_counter() - started, q, steps)


def _whitebox_one_run(data: _Data, epsilon: float) -> Dict[str, object]:
  """One run with --canaries Dirac canaries, each in with probability 1/2."""
  canaries = audit_flags.CANARIES.value
  setting, _ = _setting(epsilon, len(data.x) + canaries / 2)
  sigma, steps = setting.noise_multiplier, setting.steps
  started = time.perf_counter()
  runs = tfdp.audit.whitebox.DPSGDRuns(
      _model_fn(data), data.x, data.y, setting, input_shape=data.input_shape,
      num_classes=data.num_classes, canaries=canaries,
      public_data=data.public)
  result = tfdp.audit.whitebox.one_run_audit(
      runs, delta=privacy_flags.DELTA.value,
      confidence=audit_flags.CONFIDENCE.value, seed=training_flags.SEED.value)
  q = runs.sampling_probability(len(result.scores_in))
  return _row("whitebox", "one run", audit_flags.TRAINER.value,
              _claimed(sigma, steps, q), result.bound, sigma, 1,
              time.perf_counter() - started, q, steps)


def _train_dp(data: _Data, x: np.ndarray, y: np.ndarray, epsilon: float):
  """DP-SGD as the experiments train: (model, claimed epsilon, sigma, q, T).

  Poisson sampling always (not --sampling): the claim is calibrated for it.
  """
  sampled = tfdp.data.poisson_batches(x, y, training_flags.BATCH_SIZE.value)
  steps = training_flags.EPOCHS.value * sampled.steps_per_epoch
  sigma = _calibrated(epsilon, steps, sampled.sampling_probability)
  model = _training.compile_private(
      tfdp.make_private(_model_fn(data)(), public_data=data.public), sigma)
  model.fit(sampled.dataset, epochs=training_flags.EPOCHS.value, verbose=0)
  return (model, _claimed(sigma, steps, sampled.sampling_probability), sigma,
          sampled.sampling_probability, steps)


def _train_dp_gan(data: _Data, x: np.ndarray, y: np.ndarray, epsilon: float):
  """tfdp's MLP DP-GAN: (gan, claimed epsilon, sigma, q, T)."""
  sampled = tfdp.data.poisson_batches(x, y, training_flags.BATCH_SIZE.value)
  steps = audit_flags.GAN_STEPS.value
  sigma = _calibrated(epsilon, steps, sampled.sampling_probability)
  gan = tfdp.gan.DPGAN.build(
      "mlp", data.input_shape, num_classes=data.num_classes,
      noise_multiplier=sigma,
      expected_batch_size=training_flags.BATCH_SIZE.value,
      dataset_size=len(x), delta=privacy_flags.DELTA.value,
      accountant=privacy_flags.ACCOUNTANT.value)
  gan.train(iter(sampled.dataset.repeat()), steps)
  return (gan, gan.spent().epsilon, sigma, sampled.sampling_probability,
          steps)


def _train_stobatch(data: _Data, x: np.ndarray, y: np.ndarray,
                    epsilon: float):
  """StoBatch on one replica: (model, claimed epsilon, None, None, T).

  Two fixed batches (m = n // 2, the digits default of
  experiments/stobatch_mnist.py), epsilon_ae = epsilon_out = epsilon / 2,
  adversarial training with 3 attack steps. The claim is pure
  epsilon_ae + epsilon_out, whatever the steps.
  """
  # pylint: disable=g-import-not-at-top
  from tfdp.stobatch import models as stobatch_models
  from tfdp.stobatch import trainer as stobatch_trainer
  # pylint: enable=g-import-not-at-top
  side = data.input_shape[0]
  inputs = stobatch_models.to_architecture_input(x, "mnist", side=side)
  batches = stobatch_trainer.FixedBatches(inputs, y, len(inputs) // 2,
                                          seed=training_flags.SEED.value)
  model, budget = stobatch_models.build_stobatch_model(
      "mnist", num_classes=data.num_classes, epsilon_ae=epsilon / 2,
      epsilon_out=epsilon / 2, batch_size=batches.batch_size, channels=1,
      seed=training_flags.SEED.value, side=side,
      num_batches=batches.num_batches)
  trainer = stobatch_trainer.StoBatchTrainer(
      model, tf.distribute.get_strategy(),
      stobatch_trainer.TrainerConfig(attack_steps=3,
                                     seed=training_flags.SEED.value))
  steps = audit_flags.STOBATCH_STEPS.value
  trainer.fit(batches, steps)
  # Released on images in [0, 1]: to_architecture_input's 2 x - 1 (one
  # channel, images at their own side).
  released = tf.keras.Sequential([
      tf.keras.layers.Rescaling(2.0, offset=-1.0, input_shape=data.input_shape),
      model])
  return released, budget.epsilon, None, None, steps


def _blackbox(data: _Data, epsilon: float) -> Dict[str, object]:
  """One DP training run with canaries from the test split.

  Classifiers: mislabeled test images, scored by minus their loss. The
  DP-GAN: test images with their labels, scored by the discriminator's
  "real" logit (LOGAN).
  """
  count = audit_flags.BLACKBOX_CANARIES.value
  if audit_flags.TRAINER.value == "dp_gan":
    chosen = np.random.default_rng(training_flags.SEED.value).choice(
        len(data.test_x), size=min(count, len(data.test_x)), replace=False)
    canary_x, canary_y = data.test_x[chosen], data.test_y[chosen]
    train, score_fn = _train_dp_gan, (
        lambda gan, cx, cy: gan.realness(cx, cy))
  else:
    canary_x, canary_y = tfdp.audit.canaries.mislabeled_canaries(
        data.test_x, data.test_y, count, num_classes=data.num_classes,
        seed=training_flags.SEED.value)
    train = (_train_stobatch if audit_flags.TRAINER.value == "stobatch"
             else _train_dp)
    score_fn = tfdp.audit.blackbox.classifier_scores
  claims, released = [], []  # What the one training run claims, gives.

  def train_fn(x, y):
    model, *claim = train(data, x, y, epsilon)
    claims.append(claim)
    released.append(model)
    return model

  started = time.perf_counter()
  result = tfdp.audit.blackbox.one_run_audit(
      train_fn, data.x, data.y, canary_x, canary_y,
      delta=privacy_flags.DELTA.value,
      confidence=audit_flags.CONFIDENCE.value, seed=training_flags.SEED.value,
      score_fn=score_fn)
  ((claimed, sigma, q, steps),) = claims
  # On the whole test split (the canaries' images with their true labels
  # included): is there anything learned to leak?
  accuracy = (None if audit_flags.TRAINER.value == "dp_gan" else
              tfdp.robust.clean_accuracy(released[0], data.test_x,
                                         data.test_y))
  return _row("blackbox", "one run", audit_flags.TRAINER.value, claimed,
              result.bound, sigma, 1, time.perf_counter() - started, q, steps,
              test_accuracy=accuracy)


def _train_nonprivate(data: _Data, x: np.ndarray, y: np.ndarray):
  tf.keras.utils.set_random_seed(training_flags.SEED.value)
  model = _model_fn(data, private=False)()
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(x, y, batch_size=32, epochs=audit_flags.NONPRIVATE_EPOCHS.value,
            verbose=0)
  return model


def _membership(data: _Data, epsilons: List[float]) -> List[Dict[str, object]]:
  """TF Privacy's attacks and LiRA, non-private vs DP at each epsilon."""
  members = (data.x[:len(data.test_x)], data.y[:len(data.test_x)])
  non_members = (data.test_x, data.test_y)
  population = (np.concatenate([members[0], non_members[0]]),
                np.concatenate([members[1], non_members[1]]))
  trainers = {"non-private": lambda x, y: _train_nonprivate(data, x, y)}
  for epsilon in epsilons:
    trainers[f"DP eps={epsilon:g}"] = (
        lambda x, y, e=epsilon: _train_dp(data, x, y, e)[0])
  rows = []
  for name, train_fn in trainers.items():
    started = time.perf_counter()
    model = train_fn(*members)
    report = tfdp.audit.membership.membership_attack(model, members,
                                                     non_members)
    row = {"model": name, "members": len(members[0]),
           "train_accuracy": tfdp.robust.clean_accuracy(model, *members),
           "test_accuracy": tfdp.robust.clean_accuracy(model, *non_members),
           "mia_auc": report.auc,
           "attacker_advantage": report.attacker_advantage,
           "tfp_epsilon_lower_bound": report.epsilon_lower_bound,
           "best_attack": report.attack}
    if audit_flags.LIRA_SHADOWS.value:
      lira = tfdp.audit.membership.lira_attack(
          train_fn, population, shadow_models=audit_flags.LIRA_SHADOWS.value,
          seed=training_flags.SEED.value)
      row.update(lira_auc=lira.auc, lira_tpr_at_0_1pct_fpr=lira.tpr_at_low_fpr)
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(f"  membership {name}: AUC {row['mia_auc']:.3f}", flush=True)
    rows.append(row)
  return rows


def _configure_replicas() -> Optional[tf.distribute.Strategy]:
  """2 logical CPUs for the replica control (before TensorFlow starts)."""
  if "replica_noise" not in audit_flags.NEGATIVE_CONTROLS.value:
    return None
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration()] * 2)
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _plot(rows: List[Dict[str, object]], path: str) -> None:
  curves: Dict[str, Dict[float, float]] = {}
  for row in rows:
    if " + " in row["trainer"]:
      continue  # The negative controls have their own table.
    label = f"{row['mode']}, {row['method']}"
    curves.setdefault(label, {})[row["claimed_epsilon"]] = row["lower_bound"]
  claimed = sorted({e for curve in curves.values() for e in curve})
  curves["claimed (y = x)"] = {e: e for e in claimed}
  _report.plot_curves(curves, path, xlabel="claimed epsilon",
                      ylabel="empirical lower bound (95%)",
                      title="Privacy audit")


def _check_black_box_only_flags() -> None:
  """The DP-GAN and StoBatch are audited black-box only (docs/audit.md)."""
  trainer = audit_flags.TRAINER.value
  if trainer not in ("dp_gan", "stobatch"):
    return
  if (audit_flags.MODE.value != "blackbox" or
      audit_flags.NEGATIVE_CONTROLS.value or audit_flags.MEMBERSHIP.value):
    raise app.UsageError(
        f"--trainer={trainer} is audited black-box only (the Dirac canaries, "
        "the negative controls and the membership attacks are wired for "
        "DP-SGD classifiers): add --mode=blackbox --negative_controls= "
        "--nomembership")


def _check_membership_tools() -> None:
  """--membership needs TF Privacy's tools, which need TensorFlow 2.15."""
  if not audit_flags.MEMBERSHIP.value:
    return
  missing = tfdp.audit.membership.missing_privacy_tests()
  if missing:
    raise app.UsageError(f"--membership: {missing}. Or leave the membership "
                         "attacks out with --nomembership.")


def main(argv):
  del argv
  _check_black_box_only_flags()
  _check_membership_tools()
  unknown = sorted(set(audit_flags.NEGATIVE_CONTROLS.value) -
                   set(_audit_faults.FAULTS) - {"none"})
  if unknown:
    raise app.UsageError(
        f"--negative_controls: unknown {unknown}; choose from "
        f"{', '.join(f for f in _audit_faults.FAULTS if f != 'none')}")
  strategy = _configure_replicas()
  tf.keras.utils.set_random_seed(training_flags.SEED.value)
  data = _load()
  run_dir = _report.run_directory(output_flags.OUTPUT_DIR.value, _EXPERIMENT)
  epsilons = [float(e) for e in audit_flags.CLAIMED_EPSILONS.value]
  mode = audit_flags.MODE.value
  rows = []
  for epsilon in epsilons:
    audits = []
    if mode in ("whitebox", "both"):
      audits += [_whitebox_many(data, epsilon),
                 _whitebox_one_run(data, epsilon)]
    if mode in ("blackbox", "both"):
      audits.append(_blackbox(data, epsilon))
    for row in audits:
      print(f"eps={epsilon:g} {row['mode']} {row['method']}: lower bound "
            f"{row['lower_bound']:.3f} (claimed {row['claimed_epsilon']:.3f})",
            flush=True)
    rows += audits
  controls = []
  for fault in audit_flags.NEGATIVE_CONTROLS.value:
    controls.append(_whitebox_many(
        data, audit_flags.CONTROL_EPSILON.value, fault,
        strategy=strategy if fault == "replica_noise" else None))
    print(f"control {fault}: lower bound {controls[-1]['lower_bound']:.3f} "
          f"(claimed {controls[-1]['claimed_epsilon']:.3f})", flush=True)
  membership = (_membership(data, epsilons) if audit_flags.MEMBERSHIP.value
                else [])
  settings = {"command": " ".join(["python -m experiments." + _EXPERIMENT] +
                                  sys.argv[1:]),
              "dataset": data.name, "model": audit_flags.TRAINER.value,
              "train": len(data.x), "test": len(data.test_x),
              "delta": privacy_flags.DELTA.value}
  lines = _report.header(_EXPERIMENT, settings)
  for title, table in (("Lower bounds", rows), ("Negative controls", controls),
                       ("Membership inference", membership)):
    if table:
      lines += [f"## {title}", "", _report.markdown_table(table), ""]
  _report.write_results(run_dir, {"settings": settings, "audits": rows,
                                  "negative_controls": controls,
                                  "membership": membership},
                        "\n".join(lines))
  if rows:
    _plot(rows, f"{run_dir}/audit.png")
  print("\n".join(lines))
  print(f"Results: {run_dir}")


if __name__ == "__main__":
  app.run(main)
