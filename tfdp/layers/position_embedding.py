"""PositionEmbedding: a learned vector added at each position of a sequence."""

from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="tfdp")
class PositionEmbedding(tf.keras.layers.Layer):
  """y[b, t, :] = x[b, t, :] + P[t, :] with a learned table P [T, D].

  The input's positions and features must be static; P is initialised
  N(0, 0.02^2). It has its own clipping rule (each example's gradient of P
  is its output gradient), so transformers built with it stay on the fast
  path. Under a mask (e.g. padded tokens), the mask passes through.

  Example:
    >>> tokens = tf.keras.Input((16,), dtype=tf.int32)
    >>> x = tf.keras.layers.Embedding(100, 8)(tokens)
    >>> PositionEmbedding()(x).shape
    TensorShape([None, 16, 8])
  """

  def __init__(self, initializer: Any = None, **kwargs):
    """Args: initializer: P's initializer; None: N(0, 0.02^2)."""
    super().__init__(**kwargs)
    self.supports_masking = True
    self.initializer = (tf.keras.initializers.RandomNormal(stddev=0.02)
                        if initializer is None else
                        tf.keras.initializers.get(initializer))

  def build(self, input_shape):
    shape = tf.TensorShape(input_shape)
    if shape.rank != 3 or None in shape[1:]:
      raise ValueError(
          f"PositionEmbedding needs inputs [batch, positions, features] with "
          f"static positions and features, got {shape}")
    self.table = self.add_weight("table", shape=shape[1:],
                                 initializer=self.initializer)
    super().build(input_shape)

  def call(self, inputs):
    return inputs + tf.cast(self.table, inputs.dtype)

  def get_config(self):
    return dict(super().get_config(), initializer=(
        tf.keras.initializers.serialize(self.initializer)))
