"""Per-example image augmentations for augmentation multiplicity.

`tfdp.make_private(model, augmult=K, augment=fn)` averages each example's
gradient over K augmented copies before clipping. `fn` may be any Keras or
keras-cv preprocessing pipeline that transforms each image on its own, with
randomness independent of the data; `crop_and_flip` builds the one of De et
al. (2022): a random crop of the image padded by mirroring, and a random
horizontal flip.
"""

from typing import Optional

import tensorflow as tf

from tfdp import _validation


def crop_and_flip(padding: int = 4, flip: bool = True,
                  seed: Optional[int] = None) -> tf.keras.Sequential:
  """Random shift by up to `padding` pixels (mirrored borders), random flip.

  Equivalent to padding each image by `padding` pixels with mirror
  reflection and cropping it back to its size at a uniformly random offset
  (keras-cv's `RandomTranslation` with nearest interpolation and
  `fill_mode="reflect"`), then flipping it left-right with probability 1/2.
  Each image draws its own shift and flip.

  Args:
    padding: the largest shift in pixels, >= 0 (4 for 32 x 32 CIFAR-10).
    flip: also flip left-right (off for digits, whose mirror images are not
      digits).
    seed: seed of the augmentation's random draws (not of the DP noise).

  Returns:
    A Keras model taking images [N, H, W, C] (static H, W) to augmented
    images of the same shape. keras-cv's layers augment whenever they are
    called, whatever `training` says: use it on training batches only.

  Example:
    >>> augment = crop_and_flip(padding=2, flip=False)
    >>> augment(tf.zeros([3, 8, 8, 1])).shape
    TensorShape([3, 8, 8, 1])
  """
  padding = _validation.check_non_negative_int("padding", padding)
  import keras_cv  # pylint: disable=g-import-not-at-top
  layers = []
  if padding:
    layers.append(_RelativeTranslation(padding, seed=seed))
  if flip:
    layers.append(keras_cv.layers.RandomFlip("horizontal", seed=seed))
  return tf.keras.Sequential(layers or [tf.keras.layers.Identity()],
                             name="crop_and_flip")


class _RelativeTranslation(tf.keras.layers.Layer):
  """keras-cv's RandomTranslation with a shift given in pixels.

  keras-cv takes the shift as a fraction of the image size, which is known
  only once the layer sees an image; this builds it then.
  """

  def __init__(self, pixels: int, seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    self.pixels, self.seed = pixels, seed
    self._translation = None

  def build(self, input_shape):
    import keras_cv  # pylint: disable=g-import-not-at-top
    height, width = input_shape[1], input_shape[2]
    if height is None or width is None:
      raise ValueError("crop_and_flip needs images of static height and "
                       f"width, got shape {input_shape}")
    self._translation = keras_cv.layers.RandomTranslation(
        self.pixels / height, self.pixels / width, fill_mode="reflect",
        interpolation="nearest", seed=self.seed)
    super().build(input_shape)

  def call(self, images, training=None):
    return self._translation(images, training=training)

  def get_config(self):
    return {**super().get_config(), "pixels": self.pixels, "seed": self.seed}
