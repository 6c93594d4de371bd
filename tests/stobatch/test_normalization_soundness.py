"""Which normalisation after StoBatch's DP first layer keeps Delta3 sound.

The output layer's Delta3 bounds how much ONE example moves the noisy
coefficients: example i's term depends on its own last-hidden vector h_i
only. Training-mode BatchNorm over the first layer's (noised) outputs breaks
that in two ways, shown here on the real model (docs/stobatch.md, "Which
normalisation is sound"): the noise the auto-encoder adds is one draw
shared by the batch, so it cancels in h~_i - mean(h~) and BatchNorm (with
per-coordinate statistics) sees the data without noise; and changing one example moves the batch statistics,
hence every other example's representation. GroupNorm (the models' choice)
normalises each example by its own statistics: changing one example leaves
the others' hidden vectors exactly as they were.
"""

import numpy as np
import tensorflow as tf

from tfdp.stobatch import layers
from tfdp.stobatch import models

M = 6


def _batch(seed=0):
  return np.random.default_rng(seed).uniform(
      -1, 1, (M, 12, 12, 1)).astype(np.float32)


def test_groupnorm_model_confines_one_examples_change():
  model, _ = models.build_stobatch_model(
      "mnist", num_classes=10, epsilon_ae=1.0, epsilon_out=1.0, batch_size=M,
      side=12, noise_seed=0)
  x = _batch()
  changed = x.copy()
  changed[2] = np.random.default_rng(1).uniform(-1, 1, changed[2].shape)
  before = model.hidden(x, training=True).numpy()
  after = model.hidden(changed, training=True).numpy()
  others = [i for i in range(M) if i != 2]
  np.testing.assert_array_equal(before[others], after[others])
  assert not np.allclose(before[2], after[2])


def test_batchnorm_over_noised_outputs_spreads_and_cancels_the_noise():
  autoencoder = layers.DPAutoencoderConv(
      4, 3, input_noise_scale=0.5, hidden_noise_scale=1.0, seed=0,
      activation="linear")
  # Statistics per coordinate (as BatchNorm over a dense layer): per-channel
  # statistics cancel only the draw's channel means.
  batch_norm = tf.keras.layers.BatchNormalization(axis=[1, 2, 3],
                                                  center=False, scale=False)
  x = _batch()
  noised = autoencoder(x, training=True)
  normalised = batch_norm(noised, training=True).numpy()
  # The shared draw cancels: the same batch without any first-layer noise
  # normalises to the same values.
  quiet = layers.DPAutoencoderConv(
      4, 3, input_noise_scale=0.5, hidden_noise_scale=1.0,
      activation="linear", input_inference_noise="none",
      hidden_inference_noise="none")
  quiet.build(x.shape)
  quiet.set_weights(autoencoder.get_weights()[:2] + [
      np.zeros_like(w) for w in autoencoder.get_weights()[2:]])
  np.testing.assert_allclose(
      batch_norm(quiet(x, training=False), training=True).numpy(),
      normalised, atol=1e-4)
  # One example changed: every other example's normalised output moves.
  changed = x.copy()
  changed[2] += 0.5
  moved = batch_norm(autoencoder(changed, training=True),
                     training=True).numpy()
  for i in range(M):
    if i != 2:
      assert np.max(np.abs(moved[i] - normalised[i])) > 1e-3
