"""Model architectures used by tfdp's experiments and examples."""

from tfdp.models.mlp import mlp

__all__ = ["mlp"]
