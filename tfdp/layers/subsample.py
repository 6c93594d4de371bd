"""Subsample: keep every s-th position of each spatial axis.

A 1x1 convolution with stride s equals a stride-1 1x1 convolution of the
input subsampled by s, x[:, ::s, ::s, :] (any padding: a 1x1 kernel never
reads padding). tfdp's models build their strided 1x1 shortcuts that way.
The reason is a bug in the oneDNN that TensorFlow 2.15.1 ships (3.2.1,
oneDNN issue 6035): the filter gradient of a 1x1 convolution with stride > 1
on fewer than 16 input channels writes past a workspace, which aborts the
process on AVX-512 CPUs and can return wrong gradients on AVX2 ones. The
subsampled form never runs that kernel, and its backward pass is a strided
slice's: exact, and cheaper.
"""

from typing import Sequence, Tuple, Union

import tensorflow as tf

from tfdp import _validation


@tf.keras.utils.register_keras_serializable(package="tfdp")
class Subsample(tf.keras.layers.Layer):
  """Keeps every `strides[k]`-th position of spatial axis k (channels last).

  For rank r = len(strides), an input [B, n_1, ..., n_r, C] becomes
  [B, ceil(n_1 / s_1), ..., ceil(n_r / s_r), C]: position t of axis k is
  input position t s_k.

  Example:
    >>> inputs = tf.keras.Input((8, 8, 3))
    >>> x = Subsample((2, 2))(inputs)
    >>> x = tf.keras.layers.Conv2D(16, 1)(x)  # == Conv2D(16, 1, strides=2)
    >>> x.shape
    TensorShape([None, 4, 4, 16])
  """

  def __init__(self, strides: Union[int, Sequence[int]] = (2, 2), **kwargs):
    super().__init__(**kwargs)
    if isinstance(strides, int) or not isinstance(strides, (list, tuple)):
      strides = (strides,)
    self.strides: Tuple[int, ...] = tuple(
        _validation.check_positive_int("strides", s) for s in strides)

  def call(self, inputs):
    index = ((slice(None),) + tuple(slice(None, None, s) for s in self.strides)
             + (slice(None),))
    return inputs[index]

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape).as_list()
    for axis, stride in enumerate(self.strides, start=1):
      if shape[axis] is not None:
        shape[axis] = -(-shape[axis] // stride)
    return tf.TensorShape(shape)

  def get_config(self):
    return dict(super().get_config(), strides=list(self.strides))
