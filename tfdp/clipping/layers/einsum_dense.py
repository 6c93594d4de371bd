"""Clipping rule for EinsumDense (the projections of MultiHeadAttention)."""

import dataclasses
import re
import string
from typing import List, Optional

import numpy as np
import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common
from tfdp.clipping.layers import dense


@dataclasses.dataclass(frozen=True)
class _Letters:
  """An explicit equation "IN,KERNEL->OUT" split by role.

  batch: the input's first axis (in OUT, not in KERNEL); positions T: in IN
  and OUT only; contracted C: in IN and KERNEL only; produced P: in KERNEL
  and OUT only.
  """
  inputs: str
  kernel: str
  outputs: str
  batch: str
  positions: str
  contracted: str
  produced: str


def _explicit(equation: str, input_rank: int) -> Optional[str]:
  """`equation` with its ellipsis (if any) written as letters, or None."""
  if "..." not in equation:
    return equation
  inputs, rest = equation.split(",")
  elided = input_rank - len(inputs.replace("...", ""))
  unused = [c for c in string.ascii_letters if c not in equation]
  if elided < 1 or len(unused) < elided:
    return None
  return equation.replace("...", "".join(unused[:elided]))


def _split(equation: str) -> Optional[_Letters]:
  """The roles of the letters, or None if the rule does not describe it.

  Described: one batch axis first in the input and in the output, absent
  from the kernel,
  no repeated letter, and every letter in exactly two of the three terms
  (so W is a linear map from the C axes to the P axes, applied at each of
  the T positions of each example).
  """
  match = re.fullmatch(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)", equation)
  if match is None:
    return None
  inputs, kernel, outputs = match.groups()
  if any(len(set(term)) != len(term) for term in (inputs, kernel, outputs)):
    return None
  batch = inputs[0]
  if batch in kernel or outputs[0] != batch:
    return None
  for letter in set(inputs + kernel + outputs):
    if sum(letter in term for term in (inputs, kernel, outputs)) != 2:
      return None
  keep = lambda term, first, absent: "".join(
      c for c in term if c in first and c not in absent and c != batch)
  return _Letters(inputs, kernel, outputs, batch,
                  positions=keep(inputs, outputs, kernel),
                  contracted=keep(inputs, kernel, outputs),
                  produced=keep(kernel, outputs, inputs))


def _permutation(term: str, order: str) -> List[int]:
  return [term.index(c) for c in order]


def _static_product(shape: tf.TensorShape, term: str, letters: str):
  dims = [shape[term.index(c)] for c in letters]
  return None if None in dims else int(np.prod(dims, dtype=np.int64))


@registry.register(tf.keras.layers.EinsumDense)
class EinsumDenseRule(registry.LayerRule):
  """z = einsum(equation, x, W) + b, a Dense map between groups of axes.

  The equation's letters (the ellipsis written out) are the batch axis, the
  positions T (input and output only), the contracted axes C (input and
  kernel) and the produced axes P (kernel and output). Transposed and
  reshaped, x is a_i [T, prod C], delta = dL/dz is [T, prod P] and W is a
  [prod C, prod P] matrix, so this is the Dense rule
  (`dense.linear_map_gradients`):

    g_i(W) = sum_t a_{i,t}^T delta_{i,t},   reshaped to W's axes,

  with the ghost norm or the explicit G_i, whichever costs less. The bias
  spans the trailing output axes, with size 1 on those not in `bias_axes`:
  g_i(b) is delta_i summed over every other non-batch axis, materialised.

  Covers Keras' MultiHeadAttention projections ("abc,cde->abde" for query,
  key and value; "abcd,cde->abe" for the output) and Dense-like equations
  ("ab,bc->ac", "...b,bc->...c", "abc,cd->abd"). An equation with a letter
  in all three terms or in one only (a kernel axis shared with the input
  and output, a summed input axis) is left to the exact fall-back.
  """

  def applies_to(self, layer):
    # Ellipses are resolved against the input's rank at the call; here any
    # rank of at least the written letters plus one is tried.
    rank = len(layer.equation.split(",")[0].replace("...", "")) + 1
    explicit = _explicit(layer.equation, rank)
    return explicit is not None and _split(explicit) is not None

  def forward(self, layer, call, args, kwargs):
    z, outputs = _common.call_without_activation(layer, call, args, kwargs)
    return outputs, registry.Tap(layer, self, z, {"inputs": args[0]})

  def gradients(self, tap, output_gradient):
    layer, copies = tap.layer, tap.copies
    inputs = tf.cast(tap.saved["inputs"], output_gradient.dtype)
    letters = _split(_explicit(layer.equation, inputs.shape.rank))
    if letters is None:
      raise ValueError(
          f"EinsumDense '{layer.name}': equation {layer.equation!r} on an "
          f"input of rank {inputs.shape.rank} is not a linear map of one "
          "batch axis")
    activations = self._rows(inputs, letters.inputs, letters.batch,
                             letters.positions, letters.contracted, copies)
    deltas = self._rows(output_gradient, letters.outputs, letters.batch,
                        letters.positions, letters.produced, copies)
    kernel_shape = layer.kernel.shape
    kernel_order = letters.contracted + letters.produced
    split_shape = [kernel_shape[letters.kernel.index(c)] for c in kernel_order]
    to_kernel_axes = _permutation(kernel_order, letters.kernel)

    def to_kernel(matrix):
      leading = matrix.shape.rank - 2
      split = tf.reshape(matrix, tf.concat(
          [tf.shape(matrix)[:leading], split_shape], 0))
      return tf.transpose(split, list(range(leading)) +
                          [leading + a for a in to_kernel_axes])

    def from_kernel(kernel_tensor):
      ordered = tf.transpose(kernel_tensor,
                             _permutation(letters.kernel, kernel_order))
      return tf.reshape(ordered, [activations.shape[-1], deltas.shape[-1]])

    bias = []
    if layer.bias is not None:
      bias = [(layer.bias, self._bias_per_example(
          output_gradient, letters, layer, copies))]
    return dense.linear_map_gradients(layer.kernel, activations, deltas,
                                      bias, to_kernel, from_kernel)

  @staticmethod
  def _rows(tensor: tf.Tensor, term: str, batch: str, positions: str,
            features: str, copies: int) -> tf.Tensor:
    """`tensor` (axes `term`) as [examples, K T, prod features]."""
    moved = tf.transpose(tensor,
                         _permutation(term, batch + positions + features))
    row_positions = _static_product(tensor.shape, term, positions)
    count = copies * row_positions if row_positions else -1
    return tf.reshape(moved, [tf.shape(moved)[0] // copies, count,
                              _static_product(tensor.shape, term, features)])

  @staticmethod
  def _bias_per_example(output_gradient, letters, layer, copies):
    """g_i(b): delta summed over the non-batch axes not in `bias_axes`,
    in b's shape (which has size 1 where an axis is not a bias axis)."""
    summed = [i for i, c in enumerate(letters.outputs)
              if c != letters.batch and c not in layer.bias_axes]
    per_row = tf.reduce_sum(output_gradient, axis=summed)
    per_row = tf.reshape(per_row, tf.concat(
        [tf.shape(per_row)[:1], layer.bias.shape], 0))
    return _common.sum_copies(per_row, copies)
