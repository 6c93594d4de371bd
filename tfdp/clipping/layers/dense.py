"""Clipping rule for Dense layers on inputs of any rank."""

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
    # that the choice below sees it inside tf.function too).
    row_positions = inputs.shape[1:-1].num_elements()
    positions = copies * row_positions if row_positions else None
    examples = tf.shape(inputs)[0] // copies
    activations = tf.reshape(inputs, [examples, positions or -1, input_dim])
    deltas = tf.reshape(output_gradient,
                        [examples, positions or -1, output_dim])
    bias_per_example = [tf.reduce_sum(deltas, axis=1)] if layer.use_bias else []
    if not _common.prefer_ghost_norm(positions or 1, input_dim, output_dim):
      kernel_per_example = tf.einsum("btd,btp->bdp", activations, deltas)
      return _common.from_per_example(variables,
                                      [kernel_per_example] + bias_per_example)
    squared = _common.ghost_squared_norms(activations, deltas)
    if bias_per_example:
      squared += _common.per_example_squared_norm(bias_per_example[0])

    def weighted_sum(factors):
      scaled = _common.scale_examples(factors, deltas)
      kernel = tf.einsum("btd,btp->dp", activations, scaled)
      bias = [tf.reduce_sum(scaled, axis=[0, 1])] if layer.use_bias else []
      return [kernel] + bias

    return registry.LayerGradients(
        variables, squared, weighted_sum,
        dot=lambda v: self._dot(activations, deltas, v))

  @staticmethod
  def _dot(activations, deltas, vector):
    """g_i . (V, v_b) = sum_t (a_{i,t} V) . delta_{i,t} + (sum_t delta_{i,t}) . v_b.

    Args:
      activations: [B, T, D]; deltas: [B, T, p]; vector: V [D, p] and, with
        a bias, v_b [p].
    """
    projected = tf.einsum("btd,dp->btp", activations,
                          tf.cast(vector[0], activations.dtype))
    dots = tf.reduce_sum(projected * deltas, axis=[1, 2])
    if len(vector) == 2:
      dots += tf.linalg.matvec(tf.reduce_sum(deltas, axis=1),
                               tf.cast(vector[1], deltas.dtype))
    return dots

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
        dot=lambda v: DenseRule._dot(inputs[:, None], deltas[:, None], v))
