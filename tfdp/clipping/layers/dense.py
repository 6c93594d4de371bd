"""Clipping rule for Dense layers on inputs of any rank."""

from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common


@registry.register(tf.keras.layers.Dense)
class DenseRule(registry.LayerRule):
  """z_{i,t} = a_{i,t} W + b for inputs [B, ..., D] flattened to [B, T, D].

  Per-example gradients: g_i(W) = sum_t a_{i,t}^T delta_{i,t} and
  g_i(b) = sum_t delta_{i,t}.

  Norms:
    T = 1: ||g_i(W)||^2 = ||a_i||^2 ||delta_i||^2 (norm of an outer product).
    T > 1: the ghost norm sum_{t,s} (a_{i,t}.a_{i,s})(delta_{i,t}.delta_{i,s})
      (cost B T^2 (D+p)) or the explicit G_i = a_i^T delta_i (cost B T D p),
      whichever is cheaper.

  Clipped sum: sum_i c_i g_i(W) = A^T (c . Delta), i.e. one weight-gradient
  matmul with scaled output gradients; from the explicit G_i when they exist.

  With K copies per example (augmentation multiplicity) the example's K rows
  are its K T positions, so the T > 1 forms apply with T -> K T.
  """

  def forward(self, layer, call, args, kwargs):
    z, outputs = _common.call_without_activation(layer, call, args, kwargs)
    return outputs, registry.Tap(layer, self, z, {"inputs": args[0]})

  def gradients(self, tap, output_gradient):
    layer, copies = tap.layer, tap.copies
    inputs = tf.cast(tap.saved["inputs"], output_gradient.dtype)
    input_dim = int(layer.kernel.shape[0])
    output_dim = int(layer.kernel.shape[1])
    variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    if inputs.shape.rank == 2 and copies == 1:
      return self._rank2(variables, inputs, output_gradient)
    # [B, T, D] with T = K x the positions of one row (static if known, so
    # that the choice of norm sees it inside tf.function too).
    row_positions = inputs.shape[1:-1].num_elements()
    positions = copies * row_positions if row_positions else -1
    examples = tf.shape(inputs)[0] // copies
    activations = tf.reshape(inputs, [examples, positions, input_dim])
    deltas = tf.reshape(output_gradient, [examples, positions, output_dim])
    bias = ([(layer.bias, tf.reduce_sum(deltas, axis=1))] if layer.use_bias
            else [])
    return linear_map_gradients(layer.kernel, activations, deltas, bias)

  @staticmethod
  def _rank2(variables, inputs, deltas):
    squared = (tf.reduce_sum(tf.square(inputs), axis=1) *
               tf.reduce_sum(tf.square(deltas), axis=1))
    if len(variables) == 2:
      squared += tf.reduce_sum(tf.square(deltas), axis=1)

    def weighted_sum(factors):
      scaled = _common.scale_examples(factors, deltas)
      kernel = tf.matmul(inputs, scaled, transpose_a=True)
      return [kernel] + ([tf.reduce_sum(scaled, axis=0)]
                         if len(variables) == 2 else [])

    return registry.LayerGradients(
        variables, squared, weighted_sum,
        dot=lambda v: _kernel_dots(inputs[:, None], deltas[:, None], v[0])
        + (_common.per_example_dot(deltas, v[1]) if len(v) == 2 else 0.0))


def linear_map_gradients(
    kernel: tf.Variable, activations: tf.Tensor, deltas: tf.Tensor,
    bias: Sequence[Tuple[tf.Variable, tf.Tensor]] = (),
    to_kernel: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    from_kernel: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
) -> registry.LayerGradients:
  """`LayerGradients` of z_{i,t} = a_{i,t} W (+ bias) on canonical tensors.

  g_i(W) = sum_t a_{i,t}^T delta_{i,t}. Its norm is the ghost norm
  sum_{t,s} (a_{i,t}.a_{i,s})(delta_{i,t}.delta_{i,s}) (cost B T^2 (D+p))
  or that of the explicit G_i (cost B T D p), whichever is cheaper
  (`_common.prefer_ghost_norm`); the clipped sum is A^T (c . Delta), one
  weight-gradient contraction, or the weighted sum of the explicit G_i.

  Args:
    kernel: W's variable, of any shape that `to_kernel` gives.
    activations: [B, T, D], one row per example (T static if known).
    deltas: [B, T, p], dL/dz in the same layout.
    bias: (variable, per-example gradient [B, *variable.shape]) pairs: small,
      materialised.
    to_kernel: maps [..., D, p] to [..., *kernel.shape] (default: the
      identity, for a [D, p] kernel).
    from_kernel: its inverse on one kernel-shaped tensor (for the dots of
      centred clipping).
  """
  to_kernel = to_kernel or (lambda tensor: tensor)
  from_kernel = from_kernel or (lambda tensor: tensor)
  variables = [kernel] + [variable for variable, _ in bias]
  bias_per_example = [per_example for _, per_example in bias]
  positions = activations.shape[1] or 1
  input_dim, output_dim = activations.shape[-1], deltas.shape[-1]
  if not _common.prefer_ghost_norm(positions, input_dim, output_dim):
    per_example = tf.einsum("btd,btp->bdp", activations, deltas)
    return _common.from_per_example(
        variables, [to_kernel(per_example)] + bias_per_example)
  squared = _common.ghost_squared_norms(activations, deltas)
  for per_example in bias_per_example:
    squared += _common.per_example_squared_norm(per_example)

  def weighted_sum(factors):
    scaled = _common.scale_examples(factors, deltas)
    return [to_kernel(tf.einsum("btd,btp->dp", activations, scaled))] + [
        _common.weighted_batch_sum(factors, per_example)
        for per_example in bias_per_example]

  def dot(vector):
    dots = _kernel_dots(activations, deltas, from_kernel(vector[0]))
    for per_example, part in zip(bias_per_example, vector[1:]):
      dots += _common.per_example_dot(per_example, part)
    return dots

  return registry.LayerGradients(variables, squared, weighted_sum, dot=dot)


def _kernel_dots(activations: tf.Tensor, deltas: tf.Tensor,
                 kernel_vector: tf.Tensor) -> tf.Tensor:
  """g_i(W) . V = sum_t (a_{i,t} V) . delta_{i,t}: [B].

  Args:
    activations: [B, T, D]; deltas: [B, T, p]; kernel_vector: V, [D, p].
  """
  projected = tf.einsum("btd,dp->btp", activations,
                        tf.cast(kernel_vector, activations.dtype))
  return tf.reduce_sum(projected * deltas, axis=[1, 2])
