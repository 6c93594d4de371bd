"""Random data and a classifier that can only memorise it (audit tests).

Labels drawn independently of the inputs carry nothing to generalise from:
a model that fits them has memorised its training set, so membership
attacks and canary audits must see it.
"""

import numpy as np
import tensorflow as tf

FEATURES, CLASSES = 10, 4


def examples(count: int, seed: int):
  """(x, y): normal inputs and uniform labels, independent of each other."""
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(count, FEATURES)).astype(np.float32),
          rng.integers(0, CLASSES, count))


def classifier(x, y, epochs: int = 300, width: int = 64) -> tf.keras.Model:
  """An MLP fitted full-batch with Adam for `epochs` (seeded)."""
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(width, activation="relu",
                            input_shape=(FEATURES,)),
      tf.keras.layers.Dense(CLASSES)])
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(x, y, epochs=epochs, batch_size=len(x), verbose=0)
  return model
