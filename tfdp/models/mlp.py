"""A small multi-layer perceptron."""

from typing import Sequence, Tuple

import tensorflow as tf

from tfdp import _validation


def mlp(input_shape: Tuple[int, ...],
        num_classes: int,
        hidden_units: Sequence[int] = (64, 32),
        activation: str = "tanh") -> tf.keras.Model:
  """Flatten, then Dense layers of `hidden_units`, then `num_classes` logits.

  tanh activations keep gradients bounded, which suits DP-SGD's clipping
  (Papernot et al., 2021, "Tempered sigmoid activations").

  Example:
    >>> model = mlp((8, 8, 1), num_classes=10)
    >>> model(tf.zeros([2, 8, 8, 1])).shape
    TensorShape([2, 10])
  """
  _validation.check_positive_int("num_classes", num_classes)
  for units in hidden_units:
    _validation.check_positive_int("hidden_units", units)
  layers = [tf.keras.layers.Flatten(input_shape=input_shape)]
  layers += [tf.keras.layers.Dense(units, activation=activation)
             for units in hidden_units]
  layers.append(tf.keras.layers.Dense(num_classes))
  return tf.keras.Sequential(layers, name="mlp")
