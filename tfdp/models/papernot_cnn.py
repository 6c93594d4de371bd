"""The DP CIFAR-10 CNN of Papernot et al. (2021)."""

from typing import Tuple

import tensorflow as tf

from tfdp import _validation

# (filters, number of 3x3 convolutions) per stage; each stage ends in a 2x2
# max pool.
_STAGES = ((32, 2), (64, 2), (128, 2))
_DENSE_UNITS = 128


def scaled_channels(channels: int, width: float) -> int:
  """round(channels * width), at least 1: how `width` shrinks a model."""
  return max(1, int(round(channels * width)))


def papernot_cnn(input_shape: Tuple[int, ...] = (32, 32, 3),
                 num_classes: int = 10,
                 activation: str = "tanh",
                 width: float = 1.0) -> tf.keras.Model:
  """The DP CIFAR-10 CNN of Papernot et al. (AAAI 2021).

  From "Tempered sigmoid activations for deep learning with differential
  privacy" (Papernot, Thakurta, Song, Chien, Erlingsson): conv3x3 32,
  conv3x3 32, maxpool 2, conv3x3 64, conv3x3 64, maxpool 2, conv3x3 128,
  conv3x3 128, maxpool 2, flatten, dense 128, dense `num_classes` (logits),
  with 'SAME' padding and `activation` after every hidden layer. The paper's
  point is that a bounded activation (tanh, a tempered sigmoid) suits
  DP-SGD's clipping better than ReLU. At full width on 32x32x3 inputs it has
  550,570 parameters.

  Args:
    input_shape: shape of one example, (height, width, channels).
    num_classes: number of logits.
    activation: any Keras activation name, e.g. "tanh" or "relu".
    width: multiplies every channel and unit count (e.g. 0.25 for small test
      models); 1.0 is the published model.

  Returns:
    A functional Keras model mapping images to logits.

  Raises:
    ValueError: for a non-positive `num_classes` or `width`, or an unknown
      `activation`.

  Example:
    >>> model = papernot_cnn(width=0.25)
    >>> model(tf.zeros([2, 32, 32, 3])).shape
    TensorShape([2, 10])
  """
  _validation.check_positive_int("num_classes", num_classes)
  _validation.check_positive("width", width)
  try:
    tf.keras.activations.get(activation)
  except ValueError as error:
    raise ValueError(f"activation must be a Keras activation name, got "
                     f"{activation!r}") from error

  inputs = tf.keras.Input(shape=input_shape)
  x = inputs
  for stage, (filters, convolutions) in enumerate(_STAGES, start=1):
    for index in range(1, convolutions + 1):
      x = tf.keras.layers.Conv2D(
          scaled_channels(filters, width), 3, padding="same",
          activation=activation, name=f"conv{stage}_{index}")(x)
    x = tf.keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
  x = tf.keras.layers.Flatten(name="flatten")(x)
  x = tf.keras.layers.Dense(scaled_channels(_DENSE_UNITS, width),
                            activation=activation, name="dense")(x)
  outputs = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, outputs, name="papernot_cnn")
