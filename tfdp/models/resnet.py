"""CIFAR-style residual networks for DP training: ResNet-18 and WRN.

Both are built with the Keras Functional API from layers that tfdp's
clipping engine has rules for (Conv2D, GroupNormalization,
PublicBatchNormalization, Dense); the others (Activation, Add,
GlobalAveragePooling2D) have no weights. There is no standard
BatchNormalization: in training it normalises each example with statistics
of the whole (private) batch, which breaks per-example clipping. The
normalisation is chosen by name from `NORMALIZATIONS` ("public_batch",
"group", "none"); `normalization_layer` builds one, also for `lenet5`.
"""

import math
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf

from tfdp import _validation
from tfdp.layers import subsample
from tfdp.models.papernot_cnn import scaled_channels

# A normalisation factory maps (channels, groups, name) to a layer, or to None
# for no normalisation.
_NormalizationFactory = Callable[[int, int, str],
                                 Optional[tf.keras.layers.Layer]]
_PUBLIC_BATCH_MOMENTUM = 0.9


def _public_batch_normalization(channels: int, groups: int,
                                name: str) -> tf.keras.layers.Layer:
  """BatchNorm whose statistics come from the public batch only.

  Per channel, over the public batch (and the spatial axes); the model must
  then be trained with `tfdp.make_private(model, public_data=...)`. The
  moving averages used at inference have momentum 0.9 rather than Keras'
  0.99: DP training takes few (hundreds of) steps while the weights, hence
  the public statistics, keep moving, and averages over the last ~100 steps
  lag behind them (LeNet-5 on digits, docs/dp_bn_robust.md: 87.2% test
  accuracy with 0.99, 89.4% with the final public statistics, 90.0% with
  0.9).
  """
  del channels, groups
  # Imported here: tfdp.layers is core like tfdp.models, but importing it
  # lazily keeps the models importable whatever tfdp.layers itself imports.
  from tfdp import layers  # pylint: disable=g-import-not-at-top
  return layers.PublicBatchNormalization(momentum=_PUBLIC_BATCH_MOMENTUM,
                                         name=name)


def _group_normalization(channels: int, groups: int,
                         name: str) -> tf.keras.layers.Layer:
  """GroupNormalization with gcd(groups, channels) groups (so they divide)."""
  return tf.keras.layers.GroupNormalization(
      groups=math.gcd(groups, channels), name=name)


def _no_normalization(channels: int, groups: int, name: str) -> None:
  del channels, groups, name
  return None


_NORMALIZATIONS: Dict[str, _NormalizationFactory] = {
    "public_batch": _public_batch_normalization,
    "group": _group_normalization,
    "none": _no_normalization,
}
NORMALIZATIONS = tuple(_NORMALIZATIONS)


def normalization_layer(norm: str, channels: int, groups: int,
                        name: str) -> Optional[tf.keras.layers.Layer]:
  """The normalisation layer `norm` for `channels` features, or None.

  Args:
    norm: one of `NORMALIZATIONS`: "public_batch"
      (`tfdp.layers.PublicBatchNormalization`), "group" (GroupNormalization
      with gcd(groups, channels) groups) or "none" (returns None).
    channels: size of the normalised (last) axis.
    groups: GroupNormalization groups before the gcd.
    name: the layer's name.

  Returns:
    A new layer, or None for "none".

  Raises:
    ValueError: for an unknown `norm`.
  """
  _validation.check_choice("norm", norm, NORMALIZATIONS)
  return _NORMALIZATIONS[norm](channels, groups, name)


class _Builder:
  """Layer helpers shared by the ResNet and WRN definitions."""

  def __init__(self, norm: str, groups: int,
               weight_standardization: bool = False):
    _validation.check_choice("norm", norm, tuple(_NORMALIZATIONS))
    self._groups = _validation.check_positive_int("groups", groups)
    self._normalization = _NORMALIZATIONS[norm]
    # Convolutions followed by a normalisation need no bias (its beta is one).
    self._conv_bias = norm == "none"
    self._conv_class = tf.keras.layers.Conv2D
    if weight_standardization:
      # Imported here for the reason given in _public_batch_normalization.
      from tfdp import layers  # pylint: disable=g-import-not-at-top
      self._conv_class = layers.WeightStandardizedConv2D

  def conv(self, x: tf.Tensor, filters: int, kernel_size: int, stride: int,
           name: str) -> tf.Tensor:
    if kernel_size == 1 and stride > 1:
      # The same map without a strided 1x1 convolution, whose filter gradient
      # TF 2.15.1's oneDNN gets wrong (see tfdp.layers.Subsample).
      x = subsample.Subsample((stride, stride), name=name + "_subsample")(x)
      stride = 1
    return self._conv_class(filters, kernel_size, strides=stride,
                            padding="same", use_bias=self._conv_bias,
                            name=name)(x)

  def norm(self, x: tf.Tensor, name: str) -> tf.Tensor:
    layer = self._normalization(x.shape[-1], self._groups, name)
    return x if layer is None else layer(x)

  def norm_relu(self, x: tf.Tensor, name: str) -> tf.Tensor:
    x = self.norm(x, name + "_norm")
    return tf.keras.layers.Activation("relu", name=name + "_relu")(x)

  def block(self, x: tf.Tensor, filters: int, stride: int, *,
            preactivation: bool, name: str) -> tf.Tensor:
    """A basic residual block of two 3x3 convolutions.

    Post-activation (ResNet, He et al. 2016a):
      y = relu(norm(conv(relu(norm(conv(x))))) + shortcut(x)).
    Pre-activation (WRN, He et al. 2016b, Zagoruyko & Komodakis 2016):
      y = conv(relu(norm(conv(relu(norm(x)))))) + shortcut(x),
    where a projecting shortcut starts from relu(norm(x)).
    The shortcut is the identity when the shape is unchanged, else a strided
    1x1 convolution (followed by a normalisation when post-activation),
    built as subsampling then a stride-1 1x1 convolution.
    """
    projection = stride != 1 or x.shape[-1] != filters
    if preactivation:
      residual = self.norm_relu(x, name + "_pre")
      shortcut_input = residual if projection else x
    else:
      residual = shortcut_input = x
    residual = self.conv(residual, filters, 3, stride, name + "_conv1")
    residual = self.norm_relu(residual, name + "_1")
    residual = self.conv(residual, filters, 3, 1, name + "_conv2")
    if not preactivation:
      residual = self.norm(residual, name + "_2_norm")
    shortcut = shortcut_input
    if projection:
      shortcut = self.conv(shortcut_input, filters, 1, stride,
                           name + "_shortcut")
      if not preactivation:
        shortcut = self.norm(shortcut, name + "_shortcut_norm")
    x = tf.keras.layers.Add(name=name + "_add")([residual, shortcut])
    if not preactivation:
      x = tf.keras.layers.Activation("relu", name=name + "_out")(x)
    return x

  def stages(self, x: tf.Tensor, channels: Tuple[int, ...],
             blocks_per_stage: int, *, preactivation: bool) -> tf.Tensor:
    """Stages of `blocks_per_stage` blocks; stride 2 entering stages 2, 3..."""
    for stage, filters in enumerate(channels, start=1):
      for index in range(1, blocks_per_stage + 1):
        stride = 2 if stage > 1 and index == 1 else 1
        x = self.block(x, filters, stride, preactivation=preactivation,
                       name=f"stage{stage}_block{index}")
    return x


def _logits(x: tf.Tensor, num_classes: int) -> tf.Tensor:
  x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return tf.keras.layers.Dense(num_classes, name="logits")(x)


def resnet18(input_shape: Tuple[int, ...] = (32, 32, 3),
             num_classes: int = 10,
             norm: str = "group",
             width: float = 1.0,
             groups: int = 16) -> tf.keras.Model:
  """ResNet-18 for 32x32 images (He et al. 2016, CIFAR variant).

  A 3x3 stem convolution with 64 channels (no max pool), then 4 stages of 2
  post-activation basic blocks with 64, 128, 256 and 512 channels (stride 2
  entering stages 2-4, 1x1 projection shortcuts where the shape changes),
  global average pooling and a dense layer of logits. At full width with
  norm="group" it has 11,173,962 parameters, as the usual BatchNorm version
  (GroupNorm's gamma and beta replace BatchNorm's).

  Args:
    input_shape: shape of one example, (height, width, channels).
    num_classes: number of logits.
    norm: "public_batch" (`tfdp.layers.PublicBatchNormalization`: batch
      statistics from a public batch only; train with
      `tfdp.make_private(model, public_data=...)`), "group"
      (GroupNormalization, per example, so DP-compatible) or "none" (no
      normalisation; the convolutions then have biases).
    width: multiplies every channel count (e.g. 0.25 for small test models).
    groups: GroupNormalization groups; a layer with C channels uses
      gcd(groups, C) groups, so that they divide C.

  Returns:
    A functional Keras model mapping images to logits.

  Raises:
    ValueError: naming the argument, for an unknown `norm` or a
      non-positive `num_classes`, `width` or `groups`.

  Example:
    >>> model = resnet18(width=0.125)
    >>> model(tf.zeros([2, 32, 32, 3])).shape
    TensorShape([2, 10])
  """
  _validation.check_positive_int("num_classes", num_classes)
  _validation.check_positive("width", width)
  builder = _Builder(norm, groups)
  channels = tuple(scaled_channels(c, width) for c in (64, 128, 256, 512))

  inputs = tf.keras.Input(shape=input_shape)
  x = builder.conv(inputs, channels[0], 3, 1, "stem_conv")
  x = builder.norm_relu(x, "stem")
  x = builder.stages(x, channels, 2, preactivation=False)
  return tf.keras.Model(inputs, _logits(x, num_classes), name="resnet18")


def wide_resnet(depth: int = 16,
                width_factor: float = 4,
                input_shape: Tuple[int, ...] = (32, 32, 3),
                num_classes: int = 10,
                norm: str = "group",
                groups: int = 16,
                weight_standardization: bool = False) -> tf.keras.Model:
  """Wide residual network WRN-depth-k (Zagoruyko & Komodakis, 2016).

  A 3x3 stem convolution with 16 channels, then 3 stages of n = (depth-4)/6
  pre-activation wide basic blocks with 16k, 32k and 64k channels (stride 2
  entering stages 2 and 3, 1x1 projection shortcuts where the shape
  changes), a final normalisation and ReLU, global average pooling and a
  dense layer of logits. No dropout. WRN-16-4 (the defaults) has 2,748,890
  parameters with norm="group", as the published BatchNorm version.

  Args:
    depth: total depth; (depth - 4) must be a positive multiple of 6.
    width_factor: k, the widening factor (> 0; non-integers shrink or widen
      the channel counts, e.g. for small test models).
    input_shape: shape of one example, (height, width, channels).
    num_classes: number of logits.
    norm: "public_batch", "group" or "none", as for `resnet18`.
    groups: GroupNormalization groups, as for `resnet18`.
    weight_standardization: build every convolution as a
      `tfdp.layers.WeightStandardizedConv2D` (De et al. 2022's WRN-16-4
      for DP-SGD: with norm="group" and groups=16).

  Returns:
    A functional Keras model mapping images to logits.

  Raises:
    ValueError: naming the argument, for a bad `depth`, `width_factor`,
      `num_classes`, `norm` or `groups`.

  Example:
    >>> model = wide_resnet(depth=10, width_factor=1)
    >>> model(tf.zeros([2, 32, 32, 3])).shape
    TensorShape([2, 10])
  """
  if (isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or
      (depth - 4) % 6):
    raise ValueError("depth must be an integer with (depth - 4) a positive "
                     f"multiple of 6 (10, 16, 22, 28, ...), got {depth!r}")
  _validation.check_positive("width_factor", width_factor)
  _validation.check_positive_int("num_classes", num_classes)
  builder = _Builder(norm, groups, weight_standardization)
  channels = tuple(scaled_channels(c, width_factor) for c in (16, 32, 64))

  inputs = tf.keras.Input(shape=input_shape)
  x = builder.conv(inputs, 16, 3, 1, "stem_conv")
  x = builder.stages(x, channels, (depth - 4) // 6, preactivation=True)
  x = builder.norm_relu(x, "final")
  return tf.keras.Model(inputs, _logits(x, num_classes),
                        name=f"wrn_{depth}_{width_factor:g}")
