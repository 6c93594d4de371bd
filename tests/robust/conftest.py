"""Shared fixtures for tests/robust: digits and a small trained classifier."""

import numpy as np
import pytest
import tensorflow as tf

import tfdp


@pytest.fixture(scope="session")
def digits():
  return tfdp.data.load_digits()


@pytest.fixture(scope="session")
def trained_model(digits):
  """A non-private MLP on digits (about 97% test accuracy), trained once."""
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([
      tf.keras.layers.Flatten(input_shape=(8, 8, 1)),
      tf.keras.layers.Dense(32, activation="tanh"),
      tf.keras.layers.Dense(10),
  ])
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(digits.train.x, digits.train.y, epochs=20, batch_size=64,
            verbose=0)
  accuracy = np.mean(np.argmax(model(digits.test.x), 1) == digits.test.y)
  assert accuracy > 0.9
  return model
