"""Offline sample quality: downstream accuracy, a Frechet distance, grids.

* Downstream accuracy (the ported system's evaluation): a classifier
  trained only on generated, labelled samples, tested on held-out REAL
  images; its accuracy and micro-averaged AUROC (one-vs-rest over the
  classes, pooled).
`evaluate` runs all three on a trained `tfdp.gan.DPGAN`, with LOGAN's
membership attack (`tfdp.gan.logan`).

* Frechet distance (the FID's formula, Heusel et al. 2017) between the
  features of real and generated images,

      FD = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)),

  in the penultimate layer of a classifier trained on real images. The
  Inception-v3 weights of the standard FID cannot be downloaded on these
  machines, so these numbers are on their own scale: compare them with each
  other, not with published FIDs.

Example:
  >>> x = np.random.default_rng(0).random((64, 8, 8, 1), np.float32)
  >>> y = np.arange(64) % 10
  >>> model = train_classifier(x, y, num_classes=10, epochs=1)
  >>> round(frechet_distance(features(model, x), features(model, x)), 6)
  0.0
"""

from typing import Any, Callable, Dict

import numpy as np
from scipy import linalg
from sklearn import metrics
import tensorflow as tf

from tfdp import _validation
from tfdp.data import datasets
from tfdp.gan import logan

FEATURES_LAYER = "features"


def classifier(image_shape, num_classes: int) -> tf.keras.Model:
  """A small CNN: two 3x3 conv + pool blocks, dense 128 (features), logits."""
  inputs = tf.keras.Input(image_shape)
  h = inputs
  for filters in (32, 64):
    h = tf.keras.layers.Conv2D(filters, 3, padding="same",
                               activation="relu")(h)
    h = tf.keras.layers.MaxPooling2D()(h)
  h = tf.keras.layers.Flatten()(h)
  h = tf.keras.layers.Dense(128, activation="relu", name=FEATURES_LAYER)(h)
  logits = tf.keras.layers.Dense(num_classes)(h)
  return tf.keras.Model(inputs, logits, name="evaluation_classifier")


def train_classifier(x: np.ndarray, y: np.ndarray, *, num_classes: int,
                     epochs: int = 10, batch_size: int = 128
                     ) -> tf.keras.Model:
  """`classifier` trained (not privately) on (x, y) with Adam 1e-3."""
  _validation.check_positive_int("epochs", epochs)
  if len(x) == 0:
    raise ValueError("x is empty: nothing to train the classifier on")
  model = classifier(x.shape[1:], num_classes)
  model.compile(
      optimizer=tf.keras.optimizers.Adam(1e-3),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"])
  model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
  return model


def features(model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
  """The classifier's penultimate-layer activations of x, [N, 128]."""
  extractor = tf.keras.Model(model.inputs,
                             model.get_layer(FEATURES_LAYER).output)
  return extractor.predict(x, batch_size=512, verbose=0).astype(np.float64)


def frechet_distance(real_features: np.ndarray,
                     fake_features: np.ndarray) -> float:
  """FD between Gaussians fitted to two feature sets (module docstring)."""
  if len(real_features) < 2 or len(fake_features) < 2:
    raise ValueError("each feature set needs at least 2 rows for a "
                     "covariance")
  mu_r, mu_g = real_features.mean(0), fake_features.mean(0)
  cov_r = np.cov(real_features, rowvar=False)
  cov_g = np.cov(fake_features, rowvar=False)
  # A small ridge keeps the product's square root defined where a feature
  # never fires (a singular covariance); it moves FD by ~1e-6 per feature.
  ridge = 1e-6 * np.eye(len(cov_r))
  root, _ = linalg.sqrtm((cov_r + ridge) @ (cov_g + ridge), disp=False)
  root = np.real(root)
  distance = (np.sum((mu_r - mu_g) ** 2) +
              np.trace(cov_r + cov_g - 2 * root))
  return float(max(distance, 0.0))


def downstream(generate: Callable[[np.ndarray], np.ndarray],
               test_x: np.ndarray, test_y: np.ndarray, *, num_classes: int,
               num_samples: int = 10000, epochs: int = 10,
               seed: int = 0) -> Dict[str, float]:
  """Trains on generated labelled samples, tests on real ones.

  Args:
    generate: maps labels [n] to images [n, H, W, C] (a conditional G).
    test_x: held-out real images.
    test_y: their labels.
    num_classes: K.
    num_samples: generated samples, balanced over the classes.
    epochs: training epochs of the classifier.
    seed: seeds the labels' order.

  Returns:
    {"accuracy": ..., "micro_auroc": ...} on the real test images.
  """
  _validation.check_positive_int("num_samples", num_samples)
  labels = np.random.default_rng(seed).permutation(
      np.arange(num_samples) % num_classes)
  images = np.concatenate([generate(labels[i:i + 1000])
                           for i in range(0, num_samples, 1000)])
  model = train_classifier(images, labels, num_classes=num_classes,
                           epochs=epochs)
  logits = model.predict(test_x, batch_size=512, verbose=0)
  probabilities = tf.nn.softmax(logits).numpy()
  one_hot = np.eye(num_classes)[test_y]
  return {
      "accuracy": float(np.mean(np.argmax(logits, 1) == test_y)),
      "micro_auroc": float(metrics.roc_auc_score(one_hot, probabilities,
                                                 average="micro")),
  }


def evaluate(gan, train: datasets.Split, held_out: datasets.Split, *,
             num_classes: int, downstream_samples: int = 10000,
             downstream_epochs: int = 10, logan_candidates: int = 1000,
             logan_repeats: int = 10, seed: int = 0) -> Dict[str, Any]:
  """Downstream accuracy, Frechet distance and LOGAN of a trained GAN.

  Args:
    gan: a `tfdp.gan.DPGAN` (its `generate`, `realness`, `conditioning`).
    train: the private training images (D's members, and the real data of
      the Frechet distance's feature classifier).
    held_out: real images neither saw: the downstream test set, the real
      side of the Frechet distance, LOGAN's non-members.
    num_classes: K.
    downstream_samples: generated images the downstream classifier trains
      on (conditional GANs only: an unconditional G has no labels).
    downstream_epochs: its epochs.
    logan_candidates: candidates per LOGAN repeat, at most
      len(held_out) / 0.9 (90 % are non-members).
    logan_repeats: LOGAN's repeats.
    seed: seeds the labels and LOGAN's draws.

  Returns:
    {"downstream": {"accuracy", "micro_auroc"} (conditional only),
    "frechet_distance": float, "logan": `LoganResult.as_dict()`}.
  """
  results: Dict[str, Any] = {}
  conditional = gan.conditioning != "none"
  if conditional:
    results["downstream"] = downstream(
        gan.generate, held_out.x, held_out.y, num_classes=num_classes,
        num_samples=downstream_samples, epochs=downstream_epochs, seed=seed)
  feature_model = train_classifier(train.x, train.y, num_classes=num_classes)
  labels = held_out.y if conditional else np.zeros(len(held_out), np.int64)
  results["frechet_distance"] = frechet_distance(
      features(feature_model, held_out.x),
      features(feature_model, gan.generate(labels)))
  results["logan"] = logan.success_rate(
      gan.realness, (train.x, train.y), (held_out.x, held_out.y),
      num_candidates=min(logan_candidates, int(len(held_out) / 0.9)),
      repeats=logan_repeats, seed=seed).as_dict()
  return results


def sample_grid(images: np.ndarray, columns: int) -> np.ndarray:
  """Tiles images [n, H, W, C] into one image, `columns` per row."""
  columns = _validation.check_positive_int("columns", columns)
  count, height, width, channels = images.shape
  rows = -(-count // columns)
  grid = np.zeros([rows * height, columns * width, channels], images.dtype)
  for index, image in enumerate(images):
    row, column = divmod(index, columns)
    grid[row * height:(row + 1) * height,
         column * width:(column + 1) * width] = image
  return grid
