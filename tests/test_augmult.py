"""Augmentation multiplicity through make_private and model.fit.

The engine's formulas are checked rule by rule in
tests/clipping/test_augmult.py and the noise in tests/test_training_noise.py;
here a whole fit step is checked against the one-example-at-a-time oracle,
with a known augmentation, plus the arguments' refusals and
`tfdp.data.augment.crop_and_flip`.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp
from tfdp.data import augment as augment_lib

COPIES, BATCH, CLIP, LEARNING_RATE = 3, 6, 0.05, 0.5
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")
# Copy k of every example is scaled by SCALES[k]: a known "augmentation".
SCALES = np.array([1.0, -0.5, 2.0], np.float32)


def _known_augmentation(rows):
  copies = tf.reshape(rows, [-1, COPIES, 4, 4, 1]) * SCALES[:, None, None,
                                                            None]
  return tf.reshape(copies, tf.shape(rows))


def _conv_model():
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([
      tf.keras.Input((4, 4, 1)),
      tf.keras.layers.Conv2D(3, 2, activation="tanh"),
      tf.keras.layers.GroupNormalization(groups=1),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3)])


@pytest.mark.parametrize("physical_batch_size", [None, 4])
def test_fit_step_applies_the_clipped_mean_over_copies(physical_batch_size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, 4, 4, 1)).astype(np.float32)
  y = rng.integers(0, 3, BATCH)
  model = _conv_model()
  rows = np.repeat(x, COPIES, axis=0) * np.tile(SCALES, BATCH)[:, None, None,
                                                               None]
  expected = oracle.mean_over_copies(
      oracle.per_example_gradients(model, rows, np.repeat(y, COPIES), LOSS),
      COPIES)
  assert np.sum(oracle.norms(expected) > CLIP) >= 2  # clipping matters
  expected_sum = oracle.clipped_sum(expected, CLIP)
  before = [v.numpy() for v in model.trainable_variables]
  model = tfdp.make_private(model, augmult=COPIES,
                            augment=_known_augmentation,
                            physical_batch_size=physical_batch_size)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=LEARNING_RATE, l2_norm_clip=CLIP, noise_multiplier=0.0,
      expected_batch_size=BATCH), loss=LOSS, metrics=["accuracy"])
  history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False,
                      verbose=0)
  # Noise 0: the step is -lr * S / B with S the clipped sum over examples.
  changes = [v.numpy() - b for v, b in zip(model.trainable_variables, before)]
  oracle.assert_gradients_close(
      changes, [-LEARNING_RATE * s / BATCH for s in expected_sum], 1e-5)
  assert 0.0 <= history.history["accuracy"][0] <= 1.0


def test_keras_preprocessing_layers_are_called_in_training_mode():
  x = np.random.default_rng(1).normal(size=(BATCH, 4, 4, 1)).astype(
      np.float32)
  model = tfdp.make_private(
      _conv_model(), augmult=2,
      augment=tf.keras.layers.GaussianNoise(1.0))  # identity unless training
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0,
      expected_batch_size=BATCH), loss=LOSS)
  seen = []
  original = model.call
  model.call = lambda inputs, **kwargs: (seen.append(inputs) or
                                         original(inputs, **kwargs))
  model.train_step((tf.constant(x), tf.zeros([BATCH], tf.int64)))
  rows = seen[0].numpy()
  assert rows.shape == (2 * BATCH, 4, 4, 1)
  assert not np.allclose(rows[0], rows[1])  # two different copies of x[0]
  assert np.abs(rows[::2] - x).mean() > 0.5  # noise ~ N(0, 1), not 0


def _compiled(model, **kwargs):
  model = tfdp.make_private(model, **kwargs)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0,
      expected_batch_size=BATCH), loss=LOSS)
  return model


@pytest.mark.parametrize("kwargs, match", [
    (dict(augmult=0), "augmult must be an integer >= 1"),
    (dict(augmult=2.5, augment=tf.identity), "augmult must be an integer"),
    (dict(augmult=4), "augmult=4 needs augment"),
    (dict(augment="flip"), "augment must be a Keras preprocessing layer"),
])
def test_bad_arguments_are_refused_naming_them(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tfdp.make_private(_conv_model(), **kwargs)


def test_an_augmentation_that_drops_rows_is_refused():
  model = _compiled(_conv_model(), augmult=2, augment=lambda rows: rows[1:])
  x = np.zeros((BATCH, 4, 4, 1), np.float32)
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                     match="one augmented row per input row"):
    model.fit(x, np.zeros(BATCH), batch_size=BATCH, verbose=0)


def test_crop_and_flip_shifts_each_image_by_its_own_whole_pixels():
  image = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
  images = np.repeat(image, 20, axis=0)
  shifted = augment_lib.crop_and_flip(padding=2, flip=False, seed=3)(
      images).numpy()
  assert shifted.shape == images.shape
  # Nearest interpolation: every pixel is one of the image's own values,
  # and the centre of each image is the original's shifted by <= 2 pixels.
  assert np.all(np.isin(shifted, image))
  offsets = set()
  for row in shifted[:, :, :, 0]:
    matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(row[2:6, 2:6],
                                 image[0, 2 - dy:6 - dy, 2 - dx:6 - dx, 0])]
    assert matches, row
    offsets.add(matches[0])
  assert len(offsets) >= 5  # independent draws per image


def test_crop_and_flip_flips_and_refuses_negative_padding():
  images = np.repeat(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1), 40,
                     axis=0)
  flipped = augment_lib.crop_and_flip(padding=0, seed=1)(images).numpy()
  is_flip = [np.array_equal(f, images[0, :, ::-1]) for f in flipped]
  is_same = [np.array_equal(f, images[0]) for f in flipped]
  assert all(a or b for a, b in zip(is_flip, is_same))
  assert 5 <= sum(is_flip) <= 35  # each image flips with probability 1/2
  with pytest.raises(ValueError, match="padding"):
    augment_lib.crop_and_flip(padding=-1)


def test_the_augmentation_pipeline_does_not_become_part_of_the_model():
  model = _conv_model()
  weights = len(model.weights)
  model = _compiled(model, augmult=2,
                    augment=augment_lib.crop_and_flip(padding=1, flip=False))
  assert not any(m.name == "crop_and_flip" for m in model.submodules)
  model.fit(np.zeros((BATCH, 4, 4, 1), np.float32), np.zeros(BATCH),
            batch_size=BATCH, verbose=0)
  assert len(model.weights) == weights
  tfdp.clipping.fast.tapped_layers(model)  # no unbuilt pipeline in the way
