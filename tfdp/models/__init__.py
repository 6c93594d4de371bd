"""Model architectures used by tfdp's experiments and examples."""

from tfdp.models.lenet import lenet5
from tfdp.models.mlp import mlp
from tfdp.models.papernot_cnn import papernot_cnn
from tfdp.models.resnet import resnet18
from tfdp.models.resnet import wide_resnet
from tfdp.models.transformer import text_transformer
from tfdp.models.transformer import vit

__all__ = ["lenet5", "mlp", "papernot_cnn", "resnet18", "text_transformer",
           "vit", "wide_resnet"]
