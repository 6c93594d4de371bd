"""Exact per-example gradients for layers without a registered rule."""

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common


class UnsupportedLayerError(ValueError):
  """A layer the fast clipping engine cannot handle, with the reason."""


class FallbackRule(registry.LayerRule):
  """Per-example Jacobian-vector products through one layer alone.

  For an unregistered layer y = f(x; theta) called on a batch, example i's
  gradient is g_i = (d y_i / d theta)^T delta_i with delta_i = dL/dy_i. It is
  computed for each example by re-running the layer on that example alone
  (`tf.vectorized_map`), then clipped and summed like any materialised
  per-example gradient. Exact, but costs one forward and backward of the
  layer per example and B x |theta| memory.

  Requirements (checked): the layer's first argument is a tensor or a nest of
  tensors with the batch first, its output is a single tensor with the batch
  first, and it treats examples independently.
  """

  def forward(self, layer, call, args, kwargs):
    outputs = call(*args, **kwargs)
    if not isinstance(outputs, tf.Tensor):
      raise UnsupportedLayerError(
          f"Layer '{layer.name}' ({type(layer).__name__}) has no clipping "
          "rule and returns a structure of tensors, so its per-example "
          "fall-back cannot run. Register a rule for it (see "
          "tfdp/clipping/layers/) or split it into layers with one output.")
    variables = list(layer.trainable_weights)
    return outputs, registry.Tap(layer, self, outputs, {
        "call": call, "args": args, "kwargs": kwargs, "variables": variables})

  def gradients(self, tap, output_gradient):
    call, args, kwargs = (tap.saved["call"], tap.saved["args"],
                          tap.saved["kwargs"])
    variables = tap.saved["variables"]
    inputs, rest = args[0], args[1:]

    def one_example(example):
      example_inputs, delta = example
      batched = tf.nest.map_structure(lambda t: t[None], example_inputs)
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        y = call(batched, *rest, **kwargs)
      return tape.gradient(y, variables, output_gradients=delta[None],
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)

    try:
      per_example = tf.vectorized_map(one_example, (inputs, output_gradient))
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
      raise UnsupportedLayerError(
          f"The per-example fall-back for layer '{tap.layer.name}' "
          f"({type(tap.layer).__name__}) cannot run: re-running it on one "
          f"example at a time failed with: {error}") from error
    return _common.from_per_example(variables, per_example, tap.copies)
