"""Clipping rule for tfdp.layers.PositionEmbedding."""

from tfdp.clipping import registry
from tfdp.clipping.layers import _common
from tfdp.layers import position_embedding


@registry.register(position_embedding.PositionEmbedding)
class PositionEmbeddingRule(registry.LayerRule):
  """y_i = x_i + P: example i's gradient of P is delta_i = dL/dy_i.

  g_i(P) = delta_i ([T, D], the sum over its K rows with K copies), so
  ||g_i||^2 = ||delta_i||^2 and sum_i c_i g_i = sum_i c_i delta_i: no
  forward state is kept, only the output gradient.
  """

  def forward(self, layer, call, args, kwargs):
    outputs = call(*args, **kwargs)
    return outputs, registry.Tap(layer, self, outputs, {})

  def gradients(self, tap, output_gradient):
    return _common.from_per_example([tap.layer.table], [output_gradient],
                                    tap.copies)
