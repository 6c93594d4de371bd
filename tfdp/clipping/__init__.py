"""Per-example gradient clipping."""

from tfdp.clipping.engine import as_per_example_losses
from tfdp.clipping.engine import clip_and_sum
from tfdp.clipping.engine import clip_factors
from tfdp.clipping.engine import check_finite_norms
from tfdp.clipping.engine import ClippedGradients
from tfdp.clipping.engine import clipped_gradients
from tfdp.clipping.engine import clipped_sum_from_tape
from tfdp.clipping import fast
from tfdp.clipping import registry
from tfdp.clipping.fast import UnsupportedLayerError

__all__ = [
    "ClippedGradients", "as_per_example_losses", "check_finite_norms",
    "clip_and_sum", "clip_factors", "clipped_gradients",
    "clipped_sum_from_tape", "fast",
    "registry", "UnsupportedLayerError",
]
