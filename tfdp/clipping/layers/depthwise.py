"""Clipping rule for DepthwiseConv1D and DepthwiseConv2D layers."""

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common
from tfdp.clipping.layers import conv

_DEPTHWISE_CLASSES = (tf.keras.layers.DepthwiseConv1D,
                      tf.keras.layers.DepthwiseConv2D)


def _bare_convolution(layer, kernel):
  """Makes the layer's own call the undilated depthwise convolution `kernel`.

  No bias, no activation, dilation 1: the call then computes z = x * kernel
  with the layer's strides and padding, for a kernel of any size and channel
  count.
  """
  return _common.replaced_attributes(
      layer, depthwise_kernel=kernel, use_bias=False, activation=None,
      dilation_rate=(1,) * layer.rank)


def _fold_batch(tensor: tf.Tensor) -> tf.Tensor:
  """[B, *spatial, n] -> [1, *spatial, B n]: example b, channel c -> b n + c."""
  rank = tensor.shape.rank
  moved = tf.transpose(tensor, list(range(1, rank - 1)) + [0, rank - 1])
  return tf.reshape(moved, tf.concat([[1], tf.shape(moved)[:-2], [-1]], 0))


@registry.register(*_DEPTHWISE_CLASSES)
class DepthwiseConvRule(registry.LayerRule):
  """z_{i,t,c m + q} = sum_j a_{i,t,j,c} W[j, c, q] + b_{c m + q}.

  Each input channel c is convolved with its own m = depth_multiplier
  filters; a_{i,t,j,c} is input channel c as kernel offset j sees it at
  output position t. Hence, with delta_{i,t,c,q} = dL/dz_{i,t,c m + q},

    g_i(W)[j, c, q] = sum_t a_{i,t,j,c} delta_{i,t,c,q},
    g_i(b) = sum_t delta_{i,t}.

  Since channels never mix, g_i(W) for all i at once is the ordinary
  depthwise filter gradient of one image whose channels are the B C
  (example, channel) pairs: fold the batch into the channels of the input
  [1, *spatial, B C] and of delta [1, *out, B C m] and differentiate the
  layer's own call (bias and activation off) at a [*k, B C, m] kernel. That
  is TF's depthwise backprop-filter kernel (cost B T k^r C m, as for the
  non-private gradient), with Keras's padding and strides. A dilation d is
  written into the kernel (zeros between taps, every d-th tap read back).
  The per-example gradients are small (k^r C m each) and always
  materialised; norms and sum_i c_i g_i come from them. Subclasses that
  override `call` take the exact fall-back, with a warning.
  """

  def applies_to(self, layer):
    return any(type(layer).call is keras_class.call
               for keras_class in _DEPTHWISE_CLASSES)

  def forward(self, layer, call, args, kwargs):
    conv.check_channels_last(layer)
    z, outputs = _common.call_without_activation(layer, call, args, kwargs)
    return outputs, registry.Tap(layer, self, z, {"call": call,
                                                  "inputs": args[0]})

  def gradients(self, tap, output_gradient):
    layer, call = tap.layer, tap.saved["call"]
    inputs = _common.once_known(
        output_gradient, tf.cast(tap.saved["inputs"], output_gradient.dtype))
    batch, rank = tf.shape(inputs)[0], layer.rank
    channels, multiplier = inputs.shape[-1], layer.depth_multiplier
    # The dilated kernel written out with zeros between the taps, size
    # (k-1) d + 1 per axis: same output and padding as the dilated call,
    # without the space-to-batch of TF's dilated depthwise convolution (which
    # needs a static channel count, hence a static batch size, here).
    dilated_size = [(k - 1) * d + 1
                    for k, d in zip(layer.kernel_size, layer.dilation_rate)]
    folded_kernel = tf.zeros(tf.concat(
        [dilated_size, [batch * channels, multiplier]], 0),
                             output_gradient.dtype)
    with _bare_convolution(layer, folded_kernel):
      folded_gradient = _common.weight_vjp(
          lambda: call(_fold_batch(inputs)), [folded_kernel],
          _fold_batch(output_gradient))[0]
    taps = folded_gradient[tuple(slice(None, None, d)
                                 for d in layer.dilation_rate)]
    # [*k, B C, m] -> [*k, B, C, m] -> [B, *k, C, m].
    unfolded = tf.reshape(taps, tf.concat(
        [layer.kernel_size, [batch, channels, multiplier]], 0))
    kernel_per_example = tf.transpose(
        unfolded, [rank] + list(range(rank)) + [rank + 1, rank + 2])
    variables, per_example = [layer.depthwise_kernel], [kernel_per_example]
    if layer.use_bias:
      variables.append(layer.bias)
      per_example.append(tf.reduce_sum(output_gradient,
                                       axis=list(range(1, rank + 1))))
    return _common.from_per_example(variables, per_example, tap.copies)
