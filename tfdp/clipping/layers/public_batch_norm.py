"""Clipping rule for `tfdp.layers.PublicBatchNormalization`.

The layer is y = gamma * x_hat + beta with x_hat = (x - mu) / sqrt(var + eps),
where, in the private training pass, (mu, var) are the statistics of the
latest public batch, read from variables and wrapped in `tf.stop_gradient`.
They are constants of the step, so y_i depends on example i alone and the
per-example normalisation rule applies unchanged (x_hat recomputed by the
layer's own call with the affine part off):

  g_i(gamma) = sum_R delta_i * x_hat_i,     g_i(beta) = sum_R delta_i.
"""

from tfdp.clipping import registry
from tfdp.clipping.layers import normalization
from tfdp.layers import public_batch_norm

registry.register(public_batch_norm.PublicBatchNormalization)(
    normalization.NormalizationRule)
