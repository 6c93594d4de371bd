"""Clipping rule for per-example normalisation layers (LayerNorm, GroupNorm)."""

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common


@registry.register(tf.keras.layers.LayerNormalization,
                   tf.keras.layers.GroupNormalization)
class NormalizationRule(registry.LayerRule):
  """y = gamma * x_hat + beta, with x_hat normalised within each example.

  x_hat comes from the layer's own call with the affine part switched off, so
  the statistics are exactly the layer's (over the example's own features
  only: no example sees another). gamma and beta live on the parameter axes
  (`layer.axis`); the other non-batch axes R are summed over:

    g_i(gamma) = sum_R delta_i * x_hat_i,     g_i(beta) = sum_R delta_i,

  with delta = dL/dy. These are small ([B, channels]) and are materialised.

  The forward pass is the layer's own call, unchanged; x_hat is recomputed
  from the kept input once delta is known, so it is a short-lived temporary
  rather than one more activation-sized tensor held from the forward pass
  to the backward pass.
  """

  def forward(self, layer, call, args, kwargs):
    outputs = call(*args, **kwargs)
    return outputs, registry.Tap(layer, self, outputs, {
        "call": call, "args": args, "kwargs": kwargs})

  def gradients(self, tap, output_gradient):
    layer = tap.layer
    call, args, kwargs = (tap.saved["call"], tap.saved["args"],
                          tap.saved["kwargs"])
    args = (_common.once_known(output_gradient, args[0]),) + tuple(args[1:])
    rank = output_gradient.shape.rank
    axes = [a % rank for a in tf.nest.flatten(layer.axis)]
    summed_axes = [a for a in range(1, rank) if a not in axes]
    variables, per_example = [], []
    if layer.scale:
      with _common.replaced_attributes(layer, gamma=None, beta=None,
                                       scale=False, center=False):
        normalized = call(*args, **kwargs)
      variables.append(layer.gamma)
      per_example.append(tf.reduce_sum(
          output_gradient * tf.cast(normalized, output_gradient.dtype),
          axis=summed_axes))
    if layer.center:
      variables.append(layer.beta)
      per_example.append(tf.reduce_sum(output_gradient, axis=summed_axes))
    return _common.from_per_example(variables, per_example, tap.copies)
