"""Clipping rule for `tfdp.layers.WeightStandardizedConv2D`."""

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common
from tfdp.clipping.layers import conv
from tfdp.layers import weight_standardization


def _convolve(layer, tap, kernel: tf.Tensor) -> tf.Tensor:
  """The layer's own call (padding, strides...) with a plain `kernel`.

  No standardisation, no bias, no activation: z = x * kernel.
  """
  with conv.plain_convolution(layer, kernel):
    return _common.call_without_activation(
        layer, tap.saved["call"], tap.saved["args"], tap.saved["kwargs"])[0]


def _per_example_sum(products: tf.Tensor, copies: int) -> tf.Tensor:
  """[B K, *spatial, p] -> [B, p]: summed over positions and copies."""
  grouped = _common.group_copies(products, copies)
  return tf.reduce_sum(grouped, axis=list(range(1, grouped.shape.rank - 1)))


@registry.register(weight_standardization.WeightStandardizedConv2D)
class WeightStandardizedConvRule(conv.ConvRule):
  """z = x * W_hat + b with W_hat = (W - mu) / s per output channel o.

  With n the fan-in, mu_o and sigma_o^2 the mean and variance of W[:, o],
  s_o = sqrt(sigma_o^2 + eps), w_hat = W_hat[:, o], the standardisation's
  Jacobian is symmetric,

    d W_hat[:, o] / d W[:, o] = (1/s_o) (I - u u^T - v v^T),
    u = 1 / sqrt(n),  v = w_hat / sqrt(n),  u . v = 0,
    ||v||^2 = r_o = sigma_o^2 / s_o^2,

  so with G_i the per-example gradient for W_hat (the Conv2D rule's) and
  G~ = G_i / s per column (its output gradient divided by s_o),

    ||g_i(W)[:, o]||^2 = ||G~_o||^2 - (u . G~_o)^2 - (2 - r_o)(v . G~_o)^2,
    u . G~_o = sum_t (sum of patch t) delta~_{t,o} / sqrt(n),
    v . G~_o = sum_t (x * W_hat)_{t,o} delta~_{t,o} / sqrt(n).

  ||G~_o||^2 is the Conv2D rule's norm (ghost or explicit) for delta~; the
  two projections cost one convolution each. Where they nearly cancel it
  (a gradient along the filter's own scale), the difference gets
  `_common.safe_difference`'s float32 margin, so the norm is never
  underestimated. The clipped sum is the layer's own weight gradient for
  c . delta (standardisation included, by autodiff), and
  g_i . V = g_i(W_hat) . J V, one convolution with kernel J V.
  """

  def applies_to(self, layer):
    return (type(layer).convolution_op is
            weight_standardization.WeightStandardizedConv2D.convolution_op)

  def gradients(self, tap, output_gradient):
    layer, copies = tap.layer, tap.copies
    dtype = output_gradient.dtype
    kernel = tf.cast(layer.kernel, dtype)
    fan_in = float(kernel.shape[:-1].num_elements())
    mean, variance = tf.nn.moments(kernel, axes=[0, 1, 2])
    scale = tf.sqrt(variance + tf.cast(layer.epsilon, dtype))  # s_o
    ratio = variance / tf.square(scale)  # r_o
    standardized = (kernel - mean) / scale
    scaled_gradient = output_gradient / scale  # delta~
    variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    bias_gradient = _per_example_sum(output_gradient, copies)

    # ||G~||^2 from the Conv2D rule, less the bias norm it adds for delta~.
    squared = super().gradients(tap, scaled_gradient).squared_norms
    if layer.use_bias:
      squared -= _common.per_example_squared_norm(
          _per_example_sum(scaled_gradient, copies))
    patch_sums = _convolve(layer, tap, tf.ones_like(kernel))
    along_u = _per_example_sum(patch_sums * scaled_gradient,
                               copies) / fan_in**0.5
    along_v = _per_example_sum(_convolve(layer, tap, standardized) *
                               scaled_gradient, copies) / fan_in**0.5
    # ||G~||^2 less the projections: a difference that can cancel.
    squared = _common.safe_difference(squared, tf.reduce_sum(
        tf.square(along_u) + (2.0 - ratio) * tf.square(along_v), axis=1))
    if layer.use_bias:
      squared += _common.per_example_squared_norm(bias_gradient)

    def weighted_sum(factors):
      scaled = tf.reshape(_common.scale_examples(
          factors, _common.group_copies(output_gradient, copies)),
                          tf.shape(output_gradient))
      return _common.weight_vjp(
          lambda: _common.call_without_activation(
              layer, tap.saved["call"], tap.saved["args"],
              tap.saved["kwargs"])[0], variables, scaled)

    def dot(vector):
      # J V per column: (V - u (u . V) - v (v . V)) / s.
      direction = tf.cast(vector[0], dtype)
      along_ones = tf.reduce_sum(direction, axis=[0, 1, 2]) / fan_in
      along_w = tf.reduce_sum(standardized * direction,
                              axis=[0, 1, 2]) / fan_in
      jacobian_v = (direction - along_ones - standardized * along_w) / scale
      dots = tf.reduce_sum(_per_example_sum(
          _convolve(layer, tap, jacobian_v) * output_gradient, copies),
                           axis=1)
      if layer.use_bias:
        dots += tf.linalg.matvec(bias_gradient, tf.cast(vector[1], dtype))
      return dots

    return registry.LayerGradients(variables, squared, weighted_sum, dot)
