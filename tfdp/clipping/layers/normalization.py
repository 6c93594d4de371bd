"""Clipping rules for per-example normalisation layers (LayerNorm, GroupNorm)."""

from typing import List

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common


@registry.register(tf.keras.layers.LayerNormalization)
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
    inputs = _common.once_known(output_gradient, tap.saved["args"][0])
    summed_axes = _summed_axes(layer, output_gradient.shape.rank)
    scale_gradient = None
    if layer.scale:
      normalized = self.normalized(tap, inputs)
      scale_gradient = tf.reduce_sum(
          output_gradient * tf.cast(normalized, output_gradient.dtype),
          axis=summed_axes)
    return _assembled(layer, tap, output_gradient, summed_axes,
                      scale_gradient)

  def normalized(self, tap, inputs: tf.Tensor) -> tf.Tensor:
    """x_hat: the layer's own call with the affine part switched off."""
    layer, call = tap.layer, tap.saved["call"]
    with _common.replaced_attributes(layer, gamma=None, beta=None,
                                     scale=False, center=False):
      return call(inputs, *tap.saved["args"][1:], **tap.saved["kwargs"])


@registry.register(tf.keras.layers.GroupNormalization)
class GroupNormalizationRule(NormalizationRule):
  """GroupNormalization, with the statistics computed here.

  Keras' GroupNormalization takes its moments with `tf.nn.weighted_moments`
  over a mask of ones, which costs about as much as the layer's forward
  pass; recomputing x_hat through it made this rule ResNet-18-GN's largest
  after the convolutions'. For example i, group g (channels c in g) and the
  other non-batch axes R:

    mu_g = mean_{R, c in g} x,   var_g = mean_{R, c in g} (x - mu_g)^2,
    g_i(gamma)[c] = (var_g + eps)^(-1/2) * sum_R delta[c] (x[c] - mu_g),

  the same two-pass moments as Keras' (mean first, then the centred
  squares), without the mask and without forming x_hat itself. beta's
  gradient is NormalizationRule's. A subclass with its own `call` or
  normalisation, or a call with a mask, keeps the layer's own call.
  """

  def gradients(self, tap, output_gradient):
    layer = tap.layer
    if not _keras_group_statistics(tap):
      return super().gradients(tap, output_gradient)
    inputs = _common.once_known(output_gradient, tap.saved["args"][0])
    dtype = output_gradient.dtype
    if dtype in (tf.float16, tf.bfloat16):  # As weighted_moments does.
      dtype = tf.float32
    # [B, ..., G, C/G, ...]: the group axis where the channel axis was.
    grouped = layer._reshape_into_groups(tf.cast(inputs, dtype))  # pylint: disable=protected-access
    rank = grouped.shape.rank
    group_axis = layer.axis % (rank - 1)
    moment_axes = [a for a in range(1, rank) if a != group_axis]
    mean = tf.reduce_mean(grouped, moment_axes, keepdims=True)
    centred = grouped - mean
    variance = tf.reduce_mean(tf.square(centred), moment_axes, keepdims=True)
    inverse_std = tf.math.rsqrt(variance + layer.epsilon)
    summed_axes = _summed_axes(layer, output_gradient.shape.rank)
    scale_gradient = None
    if layer.scale:
      position_axes = [a for a in moment_axes if a != group_axis + 1]
      grouped_gradient = layer._reshape_into_groups(  # pylint: disable=protected-access
          tf.cast(output_gradient, dtype))
      per_group = tf.reduce_sum(grouped_gradient * centred, position_axes)
      # [B, G, C/G] times [B, G, 1], then channel g C/G + j as gamma's.
      scale_gradient = tf.reshape(
          per_group * tf.reshape(inverse_std, [-1, layer.groups, 1]),
          [-1, layer.gamma.shape[0]])
      scale_gradient = tf.cast(scale_gradient, output_gradient.dtype)
    return _assembled(layer, tap, output_gradient, summed_axes,
                      scale_gradient)


def _keras_group_statistics(tap) -> bool:
  """Whether the layer normalises as Keras' GroupNormalization, unmasked."""
  layer_class = type(tap.layer)
  keras_class = tf.keras.layers.GroupNormalization
  return (layer_class.call is keras_class.call and
          layer_class._apply_normalization is  # pylint: disable=protected-access
          keras_class._apply_normalization and  # pylint: disable=protected-access
          len(tap.saved["args"]) == 1 and
          tap.saved["kwargs"].get("mask") is None)


def _summed_axes(layer, rank: int) -> List[int]:
  """The non-batch axes that are not the parameters' (`layer.axis`)."""
  axes = [a % rank for a in tf.nest.flatten(layer.axis)]
  return [a for a in range(1, rank) if a not in axes]


def _assembled(layer, tap, output_gradient: tf.Tensor, summed_axes: List[int],
               scale_gradient) -> "registry.LayerGradients":
  """The per-example gradients of gamma (given) and beta (sum_R delta)."""
  variables, per_example = [], []
  if layer.scale:
    variables.append(layer.gamma)
    per_example.append(scale_gradient)
  if layer.center:
    variables.append(layer.beta)
    per_example.append(tf.reduce_sum(output_gradient, axis=summed_axes))
  return _common.from_per_example(variables, per_example, tap.copies)
