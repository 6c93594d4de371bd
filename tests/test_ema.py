"""Parameter EMA (Keras' use_ema) with tfdp's DP optimizers in model.fit."""

import numpy as np
import tensorflow as tf

import tfdp

MOMENTUM = 0.8


class _Weights(tf.keras.callbacks.Callback):
  """The raw (not averaged) weights after every step."""

  def __init__(self):
    super().__init__()
    self.after_step = []

  def on_train_batch_end(self, batch, logs=None):
    self.after_step.append([v.numpy().astype(np.float64)
                            for v in self.model.trainable_variables])


def _model():
  tf.keras.utils.set_random_seed(0)
  return tfdp.make_private(tf.keras.Sequential([
      tf.keras.Input((6,)), tf.keras.layers.Dense(4, activation="tanh"),
      tf.keras.layers.Dense(3)]))


def test_fit_ends_with_the_ema_of_the_dp_steps_weights():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 6)).astype(np.float32)
  y = rng.integers(0, 3, 64)
  model = _model()
  optimizer = tfdp.optimizers.DPSGD(
      learning_rate=0.5, l2_norm_clip=0.3, noise_multiplier=0.7,
      expected_batch_size=16, use_ema=True, ema_momentum=MOMENTUM)
  model.compile(optimizer=optimizer,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True, reduction="none"))
  initial = [v.numpy().astype(np.float64) for v in model.trainable_variables]
  weights = _Weights()
  batches = tfdp.data.poisson_batches(x, y, 16, seed=0)
  model.fit(batches.dataset, epochs=2, verbose=0, callbacks=[weights])
  steps = len(weights.after_step)
  assert int(optimizer.iterations) == steps == 2 * batches.steps_per_epoch
  # EMA_t = m EMA_{t-1} + (1 - m) w_t from EMA_0 = w_0, over the raw
  # weights of every DP step (noise included: the EMA is post-processing).
  expected = initial
  for step_weights in weights.after_step:
    expected = [MOMENTUM * e + (1 - MOMENTUM) * w
                for e, w in zip(expected, step_weights)]
  final = [v.numpy() for v in model.trainable_variables]
  for e, f, raw in zip(expected, final, weights.after_step[-1]):
    np.testing.assert_allclose(f, e, rtol=0, atol=1e-5)
    assert np.max(np.abs(raw - e)) > 1e-3  # The average is not the last step.
