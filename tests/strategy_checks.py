"""DP training under a tf.distribute strategy: the checks that
mirrored_check.py (MirroredStrategy, 2 logical CPUs) and
multiworker_check.py (MultiWorkerMirroredStrategy, 2 processes) run.

Each returns plain numbers for one JSON line; the tests compare them with
tests/oracle.py's one-example-at-a-time reference and tests/noise_stats.py.
"""

import numpy as np
import tensorflow as tf

from tests import noise_stats
from tests import oracle
import tfdp

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")
CLIP, BATCH = 0.2, 8


def _model():
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([
      tf.keras.layers.Dense(6, activation="tanh", input_shape=(5,)),
      tf.keras.layers.LayerNormalization(),
      tf.keras.layers.Dense(3),
  ])


def _relative_error(change, reference) -> float:
  error = max(np.max(np.abs(c - r)) for c, r in zip(change, reference))
  return float(error / max(np.max(np.abs(r)) for r in reference))


def clipped_step(strategy):
  """One noiseless fit step under `strategy`: (weight change, oracle's).

  The oracle's is the clipped sum of per-example gradients taken one example
  at a time, over the expected batch size.
  """
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, 5)).astype(np.float32)
  y = rng.integers(0, 3, BATCH)
  with strategy.scope():
    model = tfdp.make_private(_model())
    model.compile(optimizer=tfdp.optimizers.DPSGD(
        learning_rate=1.0, l2_norm_clip=CLIP, noise_multiplier=0.0,
        expected_batch_size=BATCH), loss=LOSS)
  expected = oracle.clipped_sum(oracle.per_example_gradients(model, x, y,
                                                             LOSS), CLIP)
  before = [v.numpy() for v in model.trainable_variables]
  model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
  change = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
  return change, [e / BATCH for e in expected]


def fit_noise(strategy):
  """One fit step's weight change on a zero-gradient loss (tests/noise_stats).

  A global batch of noise_stats.BATCH, split over the replicas.
  """
  rng = np.random.default_rng(1)
  x = rng.normal(size=(noise_stats.BATCH, 40)).astype(np.float32)
  y = rng.integers(0, 10, noise_stats.BATCH)
  with strategy.scope():
    tf.keras.utils.set_random_seed(0)
    model = tfdp.make_private(tf.keras.Sequential([
        tf.keras.layers.Dense(120, activation="tanh", input_shape=(40,)),
        tf.keras.layers.Dense(10)]))
    model.compile(optimizer=tfdp.optimizers.DPSGD(
        learning_rate=noise_stats.LEARNING_RATE,
        l2_norm_clip=noise_stats.CLIP, noise_multiplier=noise_stats.SIGMA,
        expected_batch_size=noise_stats.BATCH),
                  loss=noise_stats.ZeroGradientLoss())
  return noise_stats.weight_change(model, x, y)


def summed_noise(strategy, sigma, size):
  """The noise on the cross-replica sum of zero clipped sums."""
  with strategy.scope():
    optimizer = tfdp.optimizers.DPSGD(learning_rate=1.0, l2_norm_clip=CLIP,
                                      noise_multiplier=sigma,
                                      expected_batch_size=1)
  per_replica = strategy.run(
      tf.function(lambda: optimizer.noisy_average([tf.zeros([size])])[0]))
  return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                         axis=None).numpy()


def sampled_rows(strategy, steps=300, size=200, batch=20):
  """Rows each local replica's batch holds, per step: [step][replica][rows].

  The labels are the row numbers, so the batches name their rows.
  """
  x = np.zeros([size, 2], np.float32)
  sampled = tfdp.data.distributed_poisson_batches(
      strategy, x, np.arange(size), batch)
  iterator = iter(sampled.dataset)
  rows = []
  for _ in range(steps):
    _, labels = next(iterator)
    rows.append([replica.numpy().tolist() for replica in
                 strategy.experimental_local_results(labels)])
  return rows


def fit_with_sampler(strategy, steps_per_epoch=3, epochs=2):
  """DP fit on distributed Poisson batches with a PrivacyCallback.

  Returns the accountant's steps, its epsilon, and the sum of the weights
  (equal on every worker when they stay in sync).
  """
  rng = np.random.default_rng(2)
  x = rng.normal(size=(64, 5)).astype(np.float32)
  y = rng.integers(0, 3, 64)
  sampled = tfdp.data.distributed_poisson_batches(strategy, x, y, 16)
  accountant = tfdp.privacy.PrivacyAccountant(1.0, 1e-5,
                                              **sampled.accountant_kwargs())
  with strategy.scope():
    model = tfdp.make_private(_model())
    model.compile(optimizer=tfdp.optimizers.DPSGD(
        learning_rate=0.1, l2_norm_clip=CLIP, noise_multiplier=1.0,
        expected_batch_size=16), loss=LOSS)
  model.fit(sampled.dataset, steps_per_epoch=steps_per_epoch, epochs=epochs,
            callbacks=[tfdp.callbacks.PrivacyCallback(accountant)],
            verbose=0)
  return {"steps": accountant.steps, "epsilon": accountant.spent().epsilon,
          "weight_sum": float(sum(np.sum(v.numpy())
                                  for v in model.trainable_variables)),
          "iterations": int(model.optimizer.iterations.numpy())}


def report(strategy) -> dict:
  """Every check under `strategy`, and the single-device reference."""
  noise = summed_noise(strategy, sigma=1.5, size=100_000)
  distributed, oracle_change = clipped_step(strategy)
  single, _ = clipped_step(tf.distribute.get_strategy())
  return {
      "replicas": strategy.num_replicas_in_sync,
      "strategy_relative_error": _relative_error(distributed, oracle_change),
      "single_relative_error": _relative_error(single, oracle_change),
      "strategy_vs_single_relative_error": _relative_error(distributed,
                                                           single),
      "noise_std": float(noise.std(ddof=1)),
      "noise_mean": float(noise.mean()),
      "noise_size": int(noise.size),
      "expected_std": 1.5 * CLIP,
      "fit_weight_change": fit_noise(strategy).tolist(),
      "sampled_rows": sampled_rows(strategy),
      "fit_with_sampler": fit_with_sampler(strategy),
  }
