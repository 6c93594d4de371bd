"""SecureSGD's Heterogeneous Gaussian Mechanism (Phan et al., IJCAI 2019).

SecureSGD, StoBatch's baseline, adds Gaussian noise to the first hidden
layer with the HGM's standard deviation (here with its heterogeneity
parameter kappa = 1, as the issue states it)

    s     = ln( sqrt(2 / pi) / delta )
    sigma = sqrt(2) Delta (sqrt(s) + sqrt(s + epsilon)) / (2 epsilon)

and trains the rest with DP-SGD (tfdp's optimizers and accountant). ``s > 0``
requires ``delta < sqrt(2 / pi) ~ 0.798``.
"""

import math
from typing import Any, Dict

import tensorflow as tf

from tfdp import _validation
from tfdp.privacy import mechanisms

_DELTA_MAX = math.sqrt(2.0 / math.pi)


def hgm_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
  """The HGM's noise stddev, ``sqrt(2) Delta (sqrt(s) + sqrt(s + eps)) / (2 eps)``.

  With ``s = ln(sqrt(2/pi) / delta)``.

  Args:
    sensitivity: Delta, the L2 sensitivity, > 0.
    epsilon: > 0.
    delta: in (0, sqrt(2/pi)) so that s > 0.

  Returns:
    sigma.

  Raises:
    ValueError: on an argument out of range.
  """
  sensitivity = _validation.check_positive("sensitivity", sensitivity)
  epsilon = _validation.check_positive("epsilon", epsilon)
  if (isinstance(delta, bool) or not isinstance(delta, (int, float))
      or not 0 < delta < _DELTA_MAX):
    raise ValueError(f"delta must be in the open interval (0, sqrt(2/pi) = "
                     f"{_DELTA_MAX:.6f}), got {delta!r}")
  s = math.log(_DELTA_MAX / delta)
  return (math.sqrt(2.0) * sensitivity * (math.sqrt(s) + math.sqrt(s + epsilon))
          / (2.0 * epsilon))


@tf.keras.utils.register_keras_serializable(package="tfdp")
class HGMNoise(tf.keras.layers.Layer):
  """Adds fresh Gaussian noise ``N(0, sigma^2)``, sigma from `hgm_sigma`.

  SecureSGD puts it on the first hidden layer; a new draw at every call (at
  training, and at inference when ``apply_at_inference``, for the Monte
  Carlo votes of the Gaussian certificate).

  Example:

  >>> layer = HGMNoise(sensitivity=1.0, epsilon=1.0, delta=1e-5)
  >>> round(layer.stddev, 4)
  4.8542
  >>> layer(tf.zeros([2, 3]), training=True).shape
  TensorShape([2, 3])

  Args:
    sensitivity: Delta, > 0.
    epsilon: > 0.
    delta: in (0, sqrt(2/pi)).
    apply_at_inference: Add noise when ``training`` is False or None too.
    **kwargs: Passed to `tf.keras.layers.Layer`.
  """

  def __init__(self, sensitivity: float, epsilon: float, delta: float,
               apply_at_inference: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.stddev = hgm_sigma(sensitivity, epsilon, delta)
    self.sensitivity = float(sensitivity)
    self.epsilon = float(epsilon)
    self.delta = float(delta)
    if not isinstance(apply_at_inference, bool):
      raise ValueError("apply_at_inference must be True or False, got "
                       f"{apply_at_inference!r}")
    self.apply_at_inference = apply_at_inference

  def call(self, inputs, training=None):
    if not training and not self.apply_at_inference:
      return inputs
    # N(0, (z Delta_2)^2) with Delta_2 = sigma, z = 1.
    return inputs + mechanisms.gaussian_noise(
        tf.shape(inputs), l2_sensitivity=self.stddev, noise_multiplier=1.0,
        dtype=inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(sensitivity=self.sensitivity, epsilon=self.epsilon,
                  delta=self.delta, apply_at_inference=self.apply_at_inference)
    return config
