"""Helpers shared by the layer rules."""

import contextlib
from typing import Any, Callable, Iterator, List, Sequence, Tuple

import tensorflow as tf

from tfdp.clipping.registry import LayerGradients

# Materialised per-example gradients above this size (bytes) make the ghost
# norm preferable even where it costs more arithmetic.
EXPLICIT_MEMORY_LIMIT_BYTES = 256 * 2**20

# Per-example gradients up to this many times the layer's output gradient are
# kept for the clipped sum (`keep_per_example_gradients`).
KEPT_GRADIENTS_PER_DELTA = 3


def per_example_squared_norm(per_example: tf.Tensor) -> tf.Tensor:
  """sum over all but the first axis of g^2: shape [B]."""
  flat = tf.reshape(per_example, [tf.shape(per_example)[0], -1])
  return tf.reduce_sum(tf.square(flat), axis=1)


def weighted_batch_sum(factors: tf.Tensor, per_example: tf.Tensor) -> tf.Tensor:
  """sum_i c_i g_i for materialised g (shape [B, ...])."""
  return tf.tensordot(tf.cast(factors, per_example.dtype), per_example, axes=1)


def group_copies(tensor: tf.Tensor, copies: int) -> tf.Tensor:
  """[B K, ...] -> [B, K, ...]: each example's K copies on their own axis.

  Rows i K .. i K + K - 1 are example i's copies. For K = 1 the tensor is
  returned unchanged (no new axis), so the usual path is untouched.
  """
  if copies == 1:
    return tensor
  dynamic = tf.shape(tensor)
  rest = [dim if dim is not None else dynamic[axis]
          for axis, dim in enumerate(tensor.shape[1:], start=1)]
  return tf.reshape(tensor, [-1, copies] + rest)


def sum_copies(per_row: tf.Tensor, copies: int) -> tf.Tensor:
  """[B K, ...] -> [B, ...]: per-row gradients summed over each example's
  copies (the 1/K of their mean is already in delta)."""
  if copies == 1:
    return per_row
  return tf.reduce_sum(group_copies(per_row, copies), axis=1)


def from_per_example(variables: Sequence[tf.Variable],
                     per_example: Sequence[tf.Tensor],
                     copies: int = 1) -> LayerGradients:
  """`LayerGradients` from materialised per-example gradients.

  ||g_i||^2 = sum_v ||g_i(v)||^2 and sum_i c_i g_i is one weighted reduction
  per variable (no second weight-gradient pass).

  Args:
    variables: the variables the gradients are for.
    per_example: one tensor per variable, [B K, *variable.shape]: the
      gradient of each row, summed here over the K copies of each example.
    copies: K, `Tap.copies`.
  """
  per_example = [sum_copies(g, copies) for g in per_example]
  squared = tf.add_n([per_example_squared_norm(g) for g in per_example])
  return LayerGradients(
      variables=list(variables),
      squared_norms=squared,
      weighted_sum=lambda c: [weighted_batch_sum(c, g) for g in per_example],
      dot=lambda v: tf.add_n([per_example_dot(g, u)
                              for g, u in zip(per_example, v)]))


def per_example_dot(per_example: tf.Tensor, vector: tf.Tensor) -> tf.Tensor:
  """g_i . v for materialised g (shape [B, ...]) and v (shape [...]): [B]."""
  flat = tf.reshape(per_example, [tf.shape(per_example)[0], -1])
  return tf.linalg.matvec(flat, tf.reshape(tf.cast(vector, flat.dtype), [-1]))


@contextlib.contextmanager
def replaced_attributes(layer: tf.keras.layers.Layer, **values) -> Iterator:
  """Sets the layer's attributes to `values` while the block runs.

  The rules use it to make a layer's own `call` compute a part of its usual
  output (no activation, no affine part...). Keras' attribute tracking is
  bypassed, so nothing is added to or removed from the layer's weights.
  """
  saved = {name: getattr(layer, name) for name in values}
  for name, value in values.items():
    object.__setattr__(layer, name, value)
  try:
    yield
  finally:
    for name, value in saved.items():
      object.__setattr__(layer, name, value)


def call_without_activation(layer: tf.keras.layers.Layer, call: Callable,
                            args, kwargs) -> Tuple[tf.Tensor, Any]:
  """Runs `call` with the layer's activation switched off.

  Returns (z, activation(z)): the pre-activation output, whose gradient the
  rules need, and the layer's real output.
  """
  activation = layer.activation
  with replaced_attributes(layer, activation=tf.keras.activations.linear):
    z = call(*args, **kwargs)
  return z, activation(z)


def once_known(output_gradient: tf.Tensor, tensor: tf.Tensor) -> tf.Tensor:
  """`tensor`, for ops that must not run before `output_gradient` exists.

  A rule's work on a layer's input (padding, slicing, transposing copies)
  could otherwise run as soon as the forward pass made the input, and its
  results be held through the whole backward pass, raising the step's peak
  memory. The identity forwards the buffer without copying it.
  """
  with tf.control_dependencies([output_gradient]):
    return tf.identity(tensor)


def prefer_ghost_norm(positions: int, input_dim: int, output_dim: int,
                      batch_size_hint: int = 128, groups: int = 1) -> bool:
  """Mixed ghost clipping's choice for a linear map with T output positions.

  The ghost norm costs ~ B T^2 (D + p) arithmetic and holds the two Gram
  matrices (2 g T^2 per example); the explicit per-example gradient costs
  ~ B T D p and holds g D p per example. The cheaper wins, unless the
  explicit gradients would not fit in `EXPLICIT_MEMORY_LIMIT_BYTES` for a
  batch of `batch_size_hint` AND hold more than the Gram matrices (with many
  positions, e.g. K augmented copies per example, the Gram matrices are the
  larger of the two and the limit would buy nothing). D and p are per group.
  """
  ghost_cost = positions * positions * (input_dim + output_dim)
  explicit_cost = positions * input_dim * output_dim
  if ghost_cost < explicit_cost:
    return True
  explicit_elements = groups * input_dim * output_dim
  gram_elements = 2 * groups * positions * positions
  return (4 * batch_size_hint * explicit_elements > EXPLICIT_MEMORY_LIMIT_BYTES
          and explicit_elements > gram_elements)


def keep_per_example_gradients(elements_per_example: int,
                               output_gradient: tf.Tensor) -> bool:
  """Whether to keep per-example gradients until the clip factors are known.

  Book-keeping forms sum_i c_i g_i once every layer's norms are known. A
  layer can keep either its per-example gradients (the sum is then a
  weighted reduction, nearly free) or its input and output gradient delta
  (the sum is then one more weight-gradient pass for c . delta). The input
  is usually alive at the step's memory peak anyway (the backward pass has
  not yet passed the layers that need it), so what keeping costs is the
  per-example gradients' size against delta's. They are kept when at most
  `KEPT_GRADIENTS_PER_DELTA` times delta. Measured at batch 128 (2 CPU
  cores, TensorFlow's BFC allocator): with 3 instead of 1, the Papernot CNN
  keeps its 16x16 convolutions (2.25x delta) and its step took 1.31x instead
  of 1.45x the non-private time for +4% peak tensor memory; ResNet-18 also
  keeps its first stride-2 convolution: +4% memory, its time unchanged
  within the noise. With 8, ResNet-18 keeps stage 2 as well (4.6x delta):
  about 3% faster, for +16% memory.

  Args:
    elements_per_example: the size of one example's gradient.
    output_gradient: delta, example-major ([B, K, ...] with K copies per
      example, whose delta is K rows'); 0 elements if not static.
  """
  return elements_per_example <= KEPT_GRADIENTS_PER_DELTA * (
      output_gradient.shape[1:].num_elements() or 0)


def ghost_squared_norms(activations: tf.Tensor,
                        output_gradients: tf.Tensor) -> tf.Tensor:
  """||sum_t a_t^T d_t||_F^2 = sum_{t,s} (a_t . a_s)(d_t . d_s), per example.

  Args:
    activations: [B, T, D].
    output_gradients: [B, T, p].

  Returns:
    Shape [B], without forming the [B, D, p] per-example gradients.
  """
  activation_gram = tf.matmul(activations, activations, transpose_b=True)
  gradient_gram = tf.matmul(output_gradients, output_gradients,
                            transpose_b=True)
  return tf.reduce_sum(activation_gram * gradient_gram, axis=[1, 2])


def weight_vjp(linear_fn: Callable[[], tf.Tensor],
               variables: Sequence[tf.Variable],
               output_gradient: tf.Tensor) -> List[tf.Tensor]:
  """The layer's ordinary weight gradient for the given output gradient.

  With output_gradient = c . delta this is sum_i c_i g_i: book-keeping
  reuses the layer's own (fast) weight-gradient kernel. Inside tf.function
  the recomputed forward is dead code and is pruned; only the
  weight-gradient ops run.
  """
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(variables)
    z = linear_fn()
  return tape.gradient(z, list(variables), output_gradients=output_gradient,
                       unconnected_gradients=tf.UnconnectedGradients.ZERO)


# Relative float32 rounding margin of a squared norm computed as a difference
# (about 16 float32 epsilons of the size of its terms).
CANCELLATION_MARGIN = 1e-6


def safe_difference(total: tf.Tensor, subtracted: tf.Tensor) -> tf.Tensor:
  """A squared norm computed as total - subtracted, never underestimated.

  Where the two nearly cancel, float32 rounding of the terms (relative to
  their size, total + |subtracted|) could make the difference smaller than
  the true squared norm, hence a clip factor too large and a clipped term
  longer than C. The result adds `CANCELLATION_MARGIN` times that size,
  which can only shorten the clipped terms. `total` >= 0; shapes [B].
  """
  difference = tf.maximum(total - subtracted, 0.0)
  return difference + CANCELLATION_MARGIN * (total + tf.abs(subtracted))


def scale_examples(factors: tf.Tensor, tensor: tf.Tensor) -> tf.Tensor:
  """c_i * tensor[i] for a batch-major tensor of any rank."""
  shape = tf.concat([tf.shape(factors), tf.ones([tf.rank(tensor) - 1],
                                                tf.int32)], 0)
  return tensor * tf.cast(tf.reshape(factors, shape), tensor.dtype)
