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
  """

  def forward(self, layer, call, args, kwargs):
    # x_hat: the layer's own call with the affine part off.
    with _common.replaced_attributes(layer, gamma=None, beta=None,
                                     scale=False, center=False):
      normalized = call(*args, **kwargs)
    rank = normalized.shape.rank
    axes = [a % rank for a in tf.nest.flatten(layer.axis)]
    shape = [1] * rank
    for axis in axes:
      shape[axis] = normalized.shape[axis]
    outputs = normalized
    if layer.scale:
      outputs = outputs * tf.cast(tf.reshape(layer.gamma, shape),
                                  outputs.dtype)
    if layer.center:
      outputs = outputs + tf.cast(tf.reshape(layer.beta, shape), outputs.dtype)
    return outputs, registry.Tap(layer, self, outputs, {
        "normalized": normalized,
        "summed_axes": [a for a in range(1, rank) if a not in axes]})

  def gradients(self, tap, output_gradient):
    layer = tap.layer
    axes = tap.saved["summed_axes"]
    variables, per_example = [], []
    if layer.scale:
      variables.append(layer.gamma)
      per_example.append(tf.reduce_sum(
          output_gradient * tap.saved["normalized"], axis=axes))
    if layer.center:
      variables.append(layer.beta)
      per_example.append(tf.reduce_sum(output_gradient, axis=axes))
    return _common.from_per_example(variables, per_example)
