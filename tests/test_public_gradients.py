"""DOPE-SGD and Mirror-GD through make_private and fit, against the oracle.

With noise 0 a step of SGD moves the weights by -lr x update, where

  DOPE:   update = sum_i clip_C(g_i - p) / B + p,
  Mirror: update = beta sum_i clip_C(g_i) / B + (1 - beta) p,

p the mean gradient over the public batch; g_i and p are computed one
example at a time by tests/oracle.py. The noise itself is checked in
tests/test_training_noise.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp

BATCH, PUBLIC, CLIP, LEARNING_RATE = 6, 5, 0.1, 0.5
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _model():
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([
      tf.keras.Input((5, 5, 1)),
      tf.keras.layers.Conv2D(3, 3, activation="tanh"),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3)])


def _data(seed, size):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(size, 5, 5, 1)).astype(np.float32),
          rng.integers(0, 3, size))


def _step(model, public_gradient, physical_batch_size=None):
  """The weight change of one noiseless fit step on the private batch."""
  x, y = _data(0, BATCH)
  before = [v.numpy() for v in model.trainable_variables]
  model = tfdp.make_private(model, public_gradient=public_gradient,
                            physical_batch_size=physical_batch_size)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=LEARNING_RATE, l2_norm_clip=CLIP, noise_multiplier=0.0,
      expected_batch_size=BATCH), loss=LOSS)
  model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
  return [v.numpy() - b for v, b in zip(model.trainable_variables, before)]


def _oracle(model):
  """(private per-example gradients, p over the whole public set)."""
  private = oracle.per_example_gradients(model, *_data(0, BATCH), LOSS)
  public = oracle.per_example_gradients(model, *_data(1, PUBLIC), LOSS)
  mean = [np.mean([g[j] for g in public], axis=0, dtype=np.float64)
          for j in range(len(public[0]))]
  return private, mean


@pytest.mark.parametrize("physical_batch_size", [None, 4])
def test_dope_clips_around_the_public_gradient_and_adds_it_back(
    physical_batch_size):
  model = _model()
  private, public = _oracle(model)
  centered = oracle.minus(private, public)
  assert np.sum(oracle.norms(centered) > CLIP) >= 2
  # The whole public set as the batch: p is then known exactly.
  change = _step(model, tfdp.public_gradients.DOPE(*_data(1, PUBLIC),
                                                   batch_size=PUBLIC),
                 physical_batch_size)
  expected = [-LEARNING_RATE * (s / BATCH + p) for s, p in
              zip(oracle.clipped_sum(centered, CLIP), public)]
  oracle.assert_gradients_close(change, expected, 1e-5)


def test_mirror_mixes_the_noisy_private_and_the_public_gradient():
  model = _model()
  private, public = _oracle(model)
  beta = 0.3
  change = _step(model, tfdp.public_gradients.Mirror(
      *_data(1, PUBLIC), private_weight=beta, batch_size=PUBLIC))
  expected = [-LEARNING_RATE * (beta * s / BATCH + (1 - beta) * p)
              for s, p in zip(oracle.clipped_sum(private, CLIP), public)]
  oracle.assert_gradients_close(change, expected, 1e-5)


def test_each_step_draws_its_own_public_batch():
  x, y = _data(1, 40)
  public = tfdp.public_gradients.DOPE(x, y, batch_size=8, seed=None)
  drawn = [set(np.flatnonzero(np.isin(x[:, 0, 0, 0],
                                      public.batch()[0].numpy()[:, 0, 0, 0])))
           for _ in range(5)]
  assert all(len(d) == 8 for d in drawn)
  assert len(set(map(frozenset, drawn))) > 1


@pytest.mark.parametrize("make, match", [
    (lambda: tfdp.public_gradients.DOPE(np.zeros((0, 3)), np.zeros(0)),
     "x \\(the public inputs\\) must hold at least one"),
    (lambda: tfdp.public_gradients.DOPE(np.zeros((4, 3)), np.zeros(3)),
     "y must hold one label per public input"),
    (lambda: tfdp.public_gradients.DOPE(np.zeros((4, 3)), np.zeros(4),
                                        batch_size=5),
     "batch_size must be at most the 4 public examples"),
    (lambda: tfdp.public_gradients.Mirror(np.zeros((4, 3)), np.zeros(4),
                                          private_weight=0.0, batch_size=2),
     "private_weight"),
])
def test_bad_public_data_is_refused_naming_the_argument(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_make_private_refuses_a_public_gradient_of_another_type():
  with pytest.raises(ValueError, match="public_gradient must be a"):
    tfdp.make_private(_model(), public_gradient=np.zeros((4, 5, 5, 1)))
