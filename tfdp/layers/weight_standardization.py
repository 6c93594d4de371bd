"""WeightStandardizedConv2D: a convolution whose filters are standardised.

Weight standardisation (Qiao et al. 2019) convolves with, per output
channel o, the kernel's fan-in (n = k_h k_w C_in weights) standardised:

    W_hat[:, o] = (W[:, o] - mean(W[:, o])) / sqrt(var(W[:, o]) + eps).

With GroupNormalization it replaces BatchNorm's conditioning without batch
statistics, which DP-SGD cannot use; De et al. (2022) and the DP trainers
after them use it in their WRNs. tfdp's clipping engine has a rule for it
(tfdp/clipping/layers/weight_standardized_conv.py).
"""

import tensorflow as tf

from tfdp import _validation


@tf.keras.utils.register_keras_serializable(package="tfdp")
class WeightStandardizedConv2D(tf.keras.layers.Conv2D):
  """Conv2D with each output channel's filter standardised before use.

  Args:
    *args: Conv2D's (filters, kernel_size, ...).
    epsilon: eps > 0 added to each filter's variance.
    **kwargs: Conv2D's; `groups` must be 1 and `data_format` channels_last.

  Example:
    >>> layer = WeightStandardizedConv2D(4, 3, padding="same")
    >>> layer(tf.zeros([2, 8, 8, 3])).shape
    TensorShape([2, 8, 8, 4])
    >>> kernel = layer.standardized_kernel()
    >>> bool(tf.reduce_all(tf.abs(tf.reduce_mean(kernel, [0, 1, 2])) < 1e-6))
    True
  """

  def __init__(self, *args, epsilon: float = 1e-6, **kwargs):
    super().__init__(*args, **kwargs)
    self.epsilon = _validation.check_positive("epsilon", epsilon)
    if self.groups != 1:
      raise ValueError("WeightStandardizedConv2D supports groups=1 only, got "
                       f"groups={self.groups}")

  def standardize(self, kernel: tf.Tensor) -> tf.Tensor:
    """W_hat for a kernel [k_h, k_w, C_in, C_out] (statistics per C_out)."""
    mean, variance = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
    return (kernel - mean) * tf.math.rsqrt(variance + self.epsilon)

  def standardized_kernel(self) -> tf.Tensor:
    return self.standardize(self.kernel)

  def convolution_op(self, inputs, kernel):
    return super().convolution_op(inputs, self.standardize(kernel))

  def get_config(self):
    return dict(super().get_config(), epsilon=self.epsilon)
