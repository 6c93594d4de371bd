"""StoBatch (Phan et al., ICML 2020) and its SecureSGD baseline: the mechanisms.

* `budget`: sensitivities Delta2, Delta3, the epsilon_ae split (gamma,
  gamma_x, epsilon') and the Laplace noise scales; `StoBatchBudget.summary`
  states the assumptions of the pure-DP guarantee.
* `layers`: `FixedLaplaceNoise` (drawn once, or fresh), `DPAutoencoderConv`
  (the DP auto-encoder first conv and its Taylor reconstruction loss),
  `ClipHidden` / `clip_hidden`.
* `losses`: `taylor_cross_entropy`, `NoisyTaylorLoss` (functional mechanism
  on the output layer), `combine_benign_adversarial`.
* `securesgd`: `hgm_sigma` and `HGMNoise` (Heterogeneous Gaussian Mechanism),
  `build_securesgd_model` (HGM first layer with a sensitivity-bounding
  kernel constraint, ResNet-18-GN body) and its Gaussian-PixelDP `evaluate`.
* `replicas`: `replica_strategy` (N GPUs, or N logical CPUs on request).
* `models`: `build_stobatch_model` (MNIST, CIFAR-10 and Tiny ImageNet
  (keras-cv ResNet-18) architectures),
  `StoBatchNet`, `to_architecture_input`.
* `trainer`: `FixedBatches` (stochastic batching), `StoBatchTrainer` (one
  synchronous data-parallel step, checkpoints, TensorBoard), `TrainerConfig`.
* `evaluation`: `evaluate` (conventional, robust and certified accuracy, the
  empirical soundness check).
"""

from tfdp.stobatch.budget import ASSUMPTIONS
from tfdp.stobatch.budget import CAVEATS
from tfdp.stobatch.budget import first_layer_sensitivity
from tfdp.stobatch.budget import kernel_sigma_max
from tfdp.stobatch.budget import output_sensitivity
from tfdp.stobatch.budget import stobatch_budget
from tfdp.stobatch.budget import StoBatchBudget
from tfdp.stobatch.layers import clip_hidden
from tfdp.stobatch.layers import ClipHidden
from tfdp.stobatch.layers import DPAutoencoderConv
from tfdp.stobatch.layers import FixedLaplaceNoise
from tfdp.stobatch.losses import combine_benign_adversarial
from tfdp.stobatch.losses import NoisyTaylorLoss
from tfdp.stobatch.losses import taylor_cross_entropy
from tfdp.stobatch.securesgd import build_securesgd_model
from tfdp.stobatch.securesgd import hgm_sigma
from tfdp.stobatch.securesgd import HGMNoise
from tfdp.stobatch import evaluation
from tfdp.stobatch.models import build_stobatch_model
from tfdp.stobatch.models import StoBatchNet
from tfdp.stobatch.models import to_architecture_input
from tfdp.stobatch.replicas import replica_strategy
from tfdp.stobatch.trainer import FixedBatches
from tfdp.stobatch.trainer import StoBatchTrainer
from tfdp.stobatch.trainer import TrainerConfig
