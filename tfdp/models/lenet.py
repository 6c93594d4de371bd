"""LeNet-5 with a choice of normalisation, as in the DP BatchNorm experiments.

LeCun et al. (1998) with the modern substitutions used by PyTorch ports and
by Davody et al. (2020, "On the effect of normalization layers on
differentially private training of deep neural networks"): max pooling and a
non-linearity of choice, and a normalisation layer after each convolution.
"""

from typing import Optional, Tuple

import tensorflow as tf

from tfdp import _validation
from tfdp.models import resnet

_CONV_FILTERS = (6, 16)
_KERNEL_SIZE = 5
_DENSE_UNITS = (120, 84)
_PADDINGS = ("same", "valid")


def _second_conv_padding(input_shape: Tuple[int, ...],
                         padding: Optional[str]) -> str:
  """Padding of the second convolution (the first is always "same").

  The classic LeNet-5 on 28x28 images pads the first convolution by 2 (so
  28x28 stays 28x28, as 32x32 unpadded in the original) and not the second
  (14x14 -> 10x10 -> pooled to 5x5). A "valid" second convolution maps a
  pooled p x p map to (p - 4) x (p - 4), which the second pool needs to be at
  least 2x2: p >= 6, i.e. inputs of at least 12x12. By default it is "valid"
  there and "same" on smaller inputs (8x8 digits: 8 -> 4 -> 4 -> 2).
  """
  pooled = [s // 2 for s in input_shape[:2]]
  if padding is None:
    return "valid" if min(pooled) >= 6 else "same"
  _validation.check_choice("padding", padding, _PADDINGS)
  if padding == "valid" and min(pooled) < _KERNEL_SIZE + 1:
    raise ValueError(
        f"padding='valid' needs images of at least 12x12 (the second 5x5 "
        f"convolution then sees a pooled map of at least 6x6), got "
        f"input_shape={tuple(input_shape)}; use padding='same' or None")
  return padding


def lenet5(norm: str = "public_batch",
           input_shape: Tuple[int, ...] = (28, 28, 1),
           num_classes: int = 10,
           *,
           activation: str = "relu",
           dense_norm: bool = False,
           padding: Optional[str] = None,
           groups: int = 2) -> tf.keras.Model:
  """LeNet-5: conv5x5 6, pool, conv5x5 16, pool, dense 120, dense 84, logits.

  Each convolution is followed by the normalisation `norm`, then
  `activation`, then a 2x2 max pool; the two hidden dense layers by
  `activation` (and by `norm` first if `dense_norm`). Convolutions followed
  by a normalisation have no bias (its offset beta plays that role).

  The BN-LeNet-5 of Davody et al. normalises after each convolution; here
  that is the default (`dense_norm=False`), which keeps the normalised layers
  those whose statistics are spatial (per channel over H x W and the public
  batch). `dense_norm=True` also normalises the 120 and 84 hidden units.

  With `padding=None` on 28x28 inputs this is the classic LeNet-5: "same"
  first convolution, "valid" second, 5x5x16 = 400 features into the dense
  layers and 61,706 trainable parameters with `norm="none"`; a normalisation
  after each convolution replaces the 6 + 16 convolution biases by 2 x (6 +
  16) scale and offset weights: 61,728. On small inputs such as the 8x8
  digits both convolutions are "same" (8 -> 4 -> 2 after the pools).

  Args:
    norm: "public_batch" (`tfdp.layers.PublicBatchNormalization`: batch
      statistics from the public batch only; train with
      `tfdp.make_private(model, public_data=...)`), "group"
      (GroupNormalization, per example) or "none".
    input_shape: shape of one example, (height, width, channels), at least
      4x4.
    num_classes: number of logits.
    activation: any Keras activation name, e.g. "relu" or "tanh".
    dense_norm: also normalise the two hidden dense layers.
    padding: padding of the second convolution, "same" or "valid"; None
      chooses "valid" for inputs of at least 12x12 and "same" below.
    groups: GroupNormalization groups; a layer with C channels uses
      gcd(groups, C) groups (the default 2 gives 2 groups of 3 and of 8
      channels).

  Returns:
    A functional Keras model mapping images to logits, named "lenet5".

  Raises:
    ValueError: naming the argument, for an unknown `norm`, `padding` or
      `activation`, a non-positive `num_classes` or `groups`, or an
      `input_shape` too small or not of rank 3.

  Example:
    >>> model = lenet5(norm="group", input_shape=(8, 8, 1))
    >>> model(tf.zeros([2, 8, 8, 1])).shape
    TensorShape([2, 10])
  """
  _validation.check_choice("norm", norm, resnet.NORMALIZATIONS)
  _validation.check_positive_int("num_classes", num_classes)
  _validation.check_positive_int("groups", groups)
  input_shape = tuple(input_shape)
  if (len(input_shape) != 3 or
      not all(isinstance(s, int) and s >= 1 for s in input_shape) or
      min(input_shape[:2]) < 4):
    raise ValueError(
        "input_shape must be (height, width, channels) with height and width "
        f">= 4 (two 2x2 pools), got {input_shape!r}")
  try:
    tf.keras.activations.get(activation)
  except ValueError as error:
    raise ValueError(f"activation must be a Keras activation name, got "
                     f"{activation!r}") from error
  paddings = ("same", _second_conv_padding(input_shape, padding))

  def normalize(x, name):
    layer = resnet.normalization_layer(norm, x.shape[-1], groups, name)
    return x if layer is None else layer(x)

  inputs = tf.keras.Input(shape=input_shape)
  x = inputs
  for index, (filters, pad) in enumerate(zip(_CONV_FILTERS, paddings),
                                         start=1):
    x = tf.keras.layers.Conv2D(filters, _KERNEL_SIZE, padding=pad,
                               use_bias=norm == "none",
                               name=f"conv{index}")(x)
    x = normalize(x, f"conv{index}_norm")
    x = tf.keras.layers.Activation(activation, name=f"conv{index}_act")(x)
    x = tf.keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
  x = tf.keras.layers.Flatten(name="flatten")(x)
  for index, units in enumerate(_DENSE_UNITS, start=1):
    x = tf.keras.layers.Dense(units, use_bias=not dense_norm or norm == "none",
                              name=f"dense{index}")(x)
    if dense_norm:
      x = normalize(x, f"dense{index}_norm")
    x = tf.keras.layers.Activation(activation, name=f"dense{index}_act")(x)
  outputs = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, outputs, name="lenet5")
