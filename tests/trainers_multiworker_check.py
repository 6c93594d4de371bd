"""Run as a script: StoBatch and the DP-GAN under two workers, killed and resumed.

  python tests/trainers_multiworker_check.py ROOT TRAINER WORKDIR PHASE \
      INDEX PORT0 PORT1

runs worker INDEX of a two-worker MultiWorkerMirroredStrategy cluster on
localhost (TF_CONFIG is set here, before TensorFlow starts) training
TRAINER ("stobatch" or "dp_gan") with checkpoints in WORKDIR/checkpoints.
PHASE "kill": worker 0 kills itself with SIGKILL when step 3 (of 4) starts,
after the checkpoint of step 2; worker 1 then waits in the all-reduce until
the test kills it. PHASE "resume": both workers run the same training again,
to the end, and print one JSON line (tests/test_multiworker.py checks it).
"""

import hashlib
import json
import os
import signal
import sys

TRAINER, WORKDIR, PHASE, INDEX, *PORTS = sys.argv[2:]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"localhost:{port}" for port in PORTS]},
    "task": {"type": "worker", "index": int(INDEX)}})

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

import tfdp
from tfdp.stobatch import models as sb_models
from tfdp.stobatch import trainer as sb_trainer
# pylint: enable=g-import-not-at-top,wrong-import-position

STEPS, CHECKPOINT_EVERY, KILL_AT = 4, 2, 3
CHECKPOINTS = os.path.join(WORKDIR, "checkpoints")


def _kill_at(step_fn, index):
  """`step_fn`, but worker 0 dies by SIGKILL on call number `index`."""
  calls = []

  def step(*args, **kwargs):
    calls.append(None)
    if PHASE == "kill" and INDEX == "0" and len(calls) == index + 1:
      os.kill(os.getpid(), signal.SIGKILL)
    return step_fn(*args, **kwargs)
  return step


def _digest(variables) -> str:
  values = [np.asarray(v.numpy()).tobytes() for v in variables]
  return hashlib.sha256(b"".join(values)).hexdigest()


def _relative(a, b) -> float:
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _stobatch_trainer(strategy, noise_seed, m=6):
  with strategy.scope():
    model, _ = sb_models.build_stobatch_model(
        "mnist", num_classes=10, epsilon_ae=50.0, epsilon_out=50.0,
        batch_size=m, seed=0, noise_seed=noise_seed, side=8, num_batches=8)
  config = sb_trainer.TrainerConfig(attacks=("ifgsm", "mim"), attack_steps=1,
                                    max_attack_size=0.3, noise_seed=noise_seed)
  return sb_trainer.StoBatchTrainer(model, strategy, config)


def stobatch(strategy):
  """Secret fixed noise shared by the workers; a resumed run's weights."""
  # The fixed noise drawn from each worker's OS entropy: the chief's value
  # must reach every worker (variables are broadcast at creation).
  secret = _stobatch_trainer(strategy, noise_seed=None)
  noise = (list(secret.model.non_trainable_variables)
           + list(secret.taylor_loss.variables))
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, size=(48, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, 48)
  batches = sb_trainer.FixedBatches(x, y, 6, seed=0)
  trainer = _stobatch_trainer(strategy, noise_seed=1)
  trainer.step = _kill_at(trainer.step, KILL_AT)
  report = {"noise_digest": _digest(noise)}
  if PHASE == "resume":
    report.update(_restored(trainer.checkpoint(), trainer.optimizer,
                            lambda: trainer.fit(batches, CHECKPOINT_EVERY,
                                                checkpoint_dir=CHECKPOINTS)))
  history = trainer.fit(batches, STEPS, checkpoint_dir=CHECKPOINTS,
                        checkpoint_every=CHECKPOINT_EVERY, log_every=1)
  # The next step's update direction equals that of one replica holding
  # both replicas' batches, at the same weights and noise.
  one = _stobatch_trainer(tf.distribute.get_strategy(), noise_seed=1)
  for mine, theirs in zip(one._variables, trainer._variables):  # pylint: disable=protected-access
    mine.assign(theirs.numpy())
  data = batches.step_data(STEPS, 2) + (trainer.attack_size(STEPS),)
  two_workers, reference = trainer.gradients(*data), one.gradients(*data)
  report.update({
      "weights_digest": _digest(trainer._variables),  # pylint: disable=protected-access
      "steps_run": [h["step"] for h in history],
      "iterations": int(trainer.optimizer.iterations.numpy()),
      "vs_one_replica": max(_relative(a, b) for a, b in
                            zip(two_workers, reference)),
  })
  return report


def _restored(checkpoint, optimizer, restore_only):
  """Runs `restore_only` (training up to the checkpoint's step, i.e. none);
  the state must then equal the chief's latest checkpoint."""
  restore_only()
  saved_path = tf.train.latest_checkpoint(CHECKPOINTS)
  mine = checkpoint.write(os.path.join(WORKDIR, f"restored-{INDEX}"))
  saved, restored = (tf.train.load_checkpoint(saved_path),
                     tf.train.load_checkpoint(mine))
  names = [name for name, _ in tf.train.list_variables(mine)
           if not name.startswith(("save_counter", "_CHECKPOINTABLE"))]
  return {"restored_equal": len(names) > 10 and all(
      np.array_equal(saved.get_tensor(name), restored.get_tensor(name))
      for name in names),
          "restored_iterations": int(optimizer.iterations.numpy())}


def _gan(strategy, sigma, batch=20, size=200):
  return tfdp.gan.DPGAN.build(
      "mlp", (8, 8, 1), num_classes=10, width=16, latent_dim=8,
      noise_multiplier=sigma, l2_norm_clip=1.0, expected_batch_size=batch,
      dataset_size=size, delta=1e-3, strategy=strategy)


def dp_gan(strategy):
  """The restored state, the steps counted, the noise added once."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, size=(200, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, 200)
  gan = _gan(strategy, sigma=1.0)
  sampled = tfdp.data.distributed_poisson_batches(strategy, x, y, 20, seed=0)
  batches = iter(sampled.dataset)
  gan.generator_step = _kill_at(gan.generator_step, KILL_AT)
  report = {}
  if PHASE == "resume":
    report.update(_restored(
        gan.checkpoint(), gan.d_optimizer,
        lambda: gan.train(batches, CHECKPOINT_EVERY,
                          checkpoint_dir=CHECKPOINTS)))
  taken = gan.train(batches, STEPS, checkpoint_dir=CHECKPOINTS,
                    log_every=CHECKPOINT_EVERY)
  spent = gan.spent()
  report.update({
      "steps_taken_now": taken,
      "iterations": int(gan.d_optimizer.iterations.numpy()),
      "spent_steps": spent.steps,
      "epsilon": spent.epsilon,
      "q": sampled.sampling_probability,
      "weights_digest": _digest(gan.discriminator.variables
                                + gan.generator.variables),
      "noise": _gan_noise(strategy),
  })
  return report


def _gan_noise(strategy):
  """The D step's real-pass gradient on empty batches: noise / B only.

  Summed over the replicas, it must have standard deviation sigma C / B
  (once), not sqrt(R) times that and not 0.
  """
  gan = _gan(strategy, sigma=3.0, batch=20)
  empty = strategy.experimental_distribute_values_from_function(
      lambda _: (tf.zeros([0, 8, 8, 1]), tf.zeros([0], tf.int64)))
  images, labels = empty

  @tf.function
  def noise():
    per_replica = strategy.run(gan._real_gradients, args=(images, labels))  # pylint: disable=protected-access
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)
            for g in per_replica]
  values = np.concatenate([g.numpy().ravel() for g in noise()])
  return {"std": float(values.std()), "mean": float(values.mean()),
          "size": int(values.size), "expected_std": 3.0 * 1.0 / 20}


def main():
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  report = {"stobatch": stobatch, "dp_gan": dp_gan}[TRAINER](strategy)
  print(json.dumps({"worker": int(INDEX),
                    "replicas": strategy.num_replicas_in_sync, **report}))


if __name__ == "__main__":
  main()
