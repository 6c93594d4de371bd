"""Generators and discriminators for DP-GANs.

Two families, each for any image side divisible by 4 (8x8 digits, 28x28
MNIST, 32x32 CIFAR-10):

* ``mlp``: the vanilla GAN of the ported system. G: [z, one-hot] -> hidden
  -> H*W*C sigmoid; D: flattened image -> hidden (LeakyReLU 0.2) -> outputs.
* ``conv``: a DCGAN-style pair. G: [z, one-hot] -> dense to (H/4, W/4, 2f)
  -> two stride-2 transposed convolutions (GroupNorm, ReLU) -> sigmoid;
  D: two stride-2 4x4 convolutions (LeakyReLU) -> flatten -> outputs.
  GroupNorm, not BatchNorm, as the ported system uses where per-example
  gradients are taken: it treats examples independently.

The discriminator's conditioning decides its inputs and outputs:

* ``none``: D(x) -> [B, 1], the logit of "real"; G(z).
* ``cgan``: D([x, one-hot y]) -> [B, 1] with a projection head
  (Miyato & Koyama 2018): ``logit = w . h + b + <E y, h>``, h the features.
* ``acgan``: D(x) -> [B, 1 + K]: the logit of "real", then K class logits.

Every layer of D is called once and has a fast clipping rule (Dense,
Conv2D), so `tfdp.clipping.fast` takes its per-example gradients.

Example:
  >>> g = generator("mlp", (8, 8, 1), num_classes=10, conditioning="acgan")
  >>> d = discriminator("mlp", (8, 8, 1), num_classes=10,
  ...                   conditioning="acgan")
  >>> d(g([tf.zeros([2, 100]), tf.one_hot([0, 1], 10)])).shape
  TensorShape([2, 11])
"""

from typing import Tuple

import tensorflow as tf

from tfdp import _validation

ARCHITECTURES = ("mlp", "conv")
CONDITIONINGS = ("none", "cgan", "acgan")


def is_conditional(conditioning: str) -> bool:
  """True where G takes a label (cgan, acgan)."""
  return conditioning != "none"


def _check(architecture: str, image_shape: Tuple[int, ...],
           conditioning: str, num_classes: int) -> Tuple[int, int, int]:
  _validation.check_choice("architecture", architecture, ARCHITECTURES)
  _validation.check_choice("conditioning", conditioning, CONDITIONINGS)
  _validation.check_positive_int("num_classes", num_classes)
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
  height, width, channels = image_shape
  if architecture == "conv" and (height % 4 or width % 4):
    raise ValueError(f"the conv architecture needs H and W divisible by 4, "
                     f"got image_shape={image_shape}")
  return height, width, channels


def generator(architecture: str,
              image_shape: Tuple[int, ...],
              num_classes: int,
              *,
              conditioning: str = "acgan",
              latent_dim: int = 100,
              width: int = 128) -> tf.keras.Model:
  """G: latent z (and a one-hot label) to images in [0, 1].

  Args:
    architecture: "mlp" or "conv".
    image_shape: (H, W, C) of the images.
    num_classes: K, the number of labels.
    conditioning: "none" (input z), "cgan" or "acgan" (inputs [z, one-hot]).
    latent_dim: the size of z, >= 1.
    width: hidden units (mlp) or the filters f of the last transposed
      convolution (conv; the first has 2f), >= 1.

  Returns:
    An uncompiled Keras model.
  """
  height, image_width, channels = _check(architecture, image_shape,
                                         conditioning, num_classes)
  _validation.check_positive_int("latent_dim", latent_dim)
  _validation.check_positive_int("width", width)
  z = tf.keras.Input([latent_dim], name="z")
  inputs = [z]
  h = z
  if is_conditional(conditioning):
    label = tf.keras.Input([num_classes], name="one_hot_label")
    inputs.append(label)
    h = tf.keras.layers.Concatenate()([z, label])
  if architecture == "mlp":
    h = tf.keras.layers.Dense(width, activation="relu")(h)
    h = tf.keras.layers.Dense(height * image_width * channels,
                              activation="sigmoid")(h)
    images = tf.keras.layers.Reshape(image_shape)(h)
  else:
    h = tf.keras.layers.Dense((height // 4) * (image_width // 4) * 2 * width,
                              activation="relu")(h)
    h = tf.keras.layers.Reshape([height // 4, image_width // 4, 2 * width])(h)
    h = tf.keras.layers.Conv2DTranspose(width, 4, strides=2,
                                        padding="same")(h)
    h = tf.keras.layers.GroupNormalization(groups=min(8, width))(h)
    h = tf.keras.layers.ReLU()(h)
    images = tf.keras.layers.Conv2DTranspose(channels, 4, strides=2,
                                             padding="same",
                                             activation="sigmoid")(h)
  return tf.keras.Model(inputs if len(inputs) > 1 else z, images,
                        name=f"{architecture}_generator")


def discriminator(architecture: str,
                  image_shape: Tuple[int, ...],
                  num_classes: int,
                  *,
                  conditioning: str = "acgan",
                  width: int = 128) -> tf.keras.Model:
  """D: images (and a one-hot label for cgan) to the logit of "real".

  Args:
    architecture: "mlp" or "conv".
    image_shape: (H, W, C) of the images.
    num_classes: K, the number of labels.
    conditioning: "none", "cgan" (inputs [x, one-hot], projection head) or
      "acgan" (outputs [B, 1 + K]: real logit, class logits).
    width: hidden units (mlp) or the filters f of the second convolution
      (conv; the first has f / 2), >= 2.

  Returns:
    An uncompiled Keras model.
  """
  _check(architecture, image_shape, conditioning, num_classes)
  _validation.check_positive_int("width", width)
  images = tf.keras.Input(image_shape, name="images")
  inputs = [images]
  if architecture == "mlp":
    h = tf.keras.layers.Flatten()(images)
    h = tf.keras.layers.Dense(width)(h)
    h = tf.keras.layers.LeakyReLU(0.2)(h)
  else:
    h = tf.keras.layers.Conv2D(max(1, width // 2), 4, strides=2,
                               padding="same")(images)
    h = tf.keras.layers.LeakyReLU(0.2)(h)
    h = tf.keras.layers.Conv2D(width, 4, strides=2, padding="same")(h)
    h = tf.keras.layers.LeakyReLU(0.2)(h)
    h = tf.keras.layers.Flatten()(h)
  logit = tf.keras.layers.Dense(1, name="real_logit")(h)
  if conditioning == "cgan":
    label = tf.keras.Input([num_classes], name="one_hot_label")
    inputs.append(label)
    embedded = tf.keras.layers.Dense(h.shape[-1], use_bias=False,
                                     name="label_projection")(label)
    projection = tf.keras.layers.Dot(axes=1)([embedded, h])
    outputs = tf.keras.layers.Add()([logit, projection])
  elif conditioning == "acgan":
    class_logits = tf.keras.layers.Dense(num_classes, name="class_logits")(h)
    outputs = tf.keras.layers.Concatenate()([logit, class_logits])
  else:
    outputs = logit
  return tf.keras.Model(inputs if len(inputs) > 1 else images, outputs,
                        name=f"{architecture}_discriminator")
