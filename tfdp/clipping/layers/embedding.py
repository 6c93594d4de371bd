"""Clipping rule for Embedding layers."""

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common


@registry.register(tf.keras.layers.Embedding)
class EmbeddingRule(registry.LayerRule):
  """z_{i,t} = E[k_{i,t}] for token ids k_{i,t}, t = 1..T.

  g_i(E) = sum_t e_{k_{i,t}} delta_{i,t}^T (e_k the k-th unit vector), so

    ||g_i||^2 = sum_{t,s} [k_{i,t} = k_{i,s}] (delta_{i,t} . delta_{i,s}),

  the ghost norm with a one-hot input (cost B T^2 d, never the V x d
  per-example gradient). Clipped sum: a scatter-add of c_i delta_{i,t} into
  rows k_{i,t}. Inner product with V: g_i . V = sum_t V[k_{i,t}] . delta_{i,t}.
  """

  def forward(self, layer, call, args, kwargs):
    outputs = call(*args, **kwargs)
    return outputs, registry.Tap(layer, self, outputs, {"ids": args[0]})

  def gradients(self, tap, output_gradient):
    layer = tap.layer
    dim = int(layer.embeddings.shape[1])
    # K copies per example: its K rows are K T positions of the example.
    batch = tf.shape(output_gradient)[0] // tap.copies
    ids = tf.reshape(tf.cast(tap.saved["ids"], tf.int64), [batch, -1])
    deltas = tf.reshape(output_gradient, [batch, -1, dim])
    same_id = tf.cast(tf.equal(ids[:, :, None], ids[:, None, :]), deltas.dtype)
    gram = tf.matmul(deltas, deltas, transpose_b=True)
    squared = tf.reduce_sum(same_id * gram, axis=[1, 2])

    def weighted_sum(factors):
      scaled = _common.scale_examples(factors, deltas)
      return [tf.math.unsorted_segment_sum(
          tf.reshape(scaled, [-1, dim]), tf.reshape(ids, [-1]),
          int(layer.embeddings.shape[0]))]

    def dot(vector):
      # g_i . V = sum_t V[k_{i,t}] . delta_{i,t}.
      rows = tf.gather(tf.cast(vector[0], deltas.dtype), ids)
      return tf.reduce_sum(rows * deltas, axis=[1, 2])

    return registry.LayerGradients([layer.embeddings], squared, weighted_sum,
                                   dot)
