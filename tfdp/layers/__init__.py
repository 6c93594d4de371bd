"""Keras layers for private training, and model conversion."""

from tfdp.layers.convert import convert_batch_norm
from tfdp.layers.public_batch_norm import public_batch_norm_layers
from tfdp.layers.public_batch_norm import public_pass
from tfdp.layers.public_batch_norm import PublicBatchNormalization
from tfdp.layers.public_batch_norm import update_public_statistics
from tfdp.layers.position_embedding import PositionEmbedding
from tfdp.layers.subsample import Subsample
from tfdp.layers.weight_standardization import WeightStandardizedConv2D

__all__ = [
    "PositionEmbedding", "PublicBatchNormalization", "Subsample", "WeightStandardizedConv2D",
    "convert_batch_norm",
    "public_batch_norm_layers", "public_pass", "update_public_statistics",
]
