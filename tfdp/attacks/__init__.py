"""Attacks that measure what a trained model leaks.

* `model_inversion`: pseudo-label-guided model inversion (PLG-MI, Yuan et
  al. 2023): top-n selection of public images, a conditional GAN trained
  with the target's margin loss, latent optimisation, and its metrics.
* `conditional_gan`: that GAN's ResNet generator with conditional batch
  norm and spectrally normalised projection discriminator.

Membership inference lives in `tfdp.audit.membership` and LOGAN (on GAN
discriminators) in `tfdp.gan.logan`.
"""

from tfdp.attacks import conditional_gan
from tfdp.attacks import model_inversion
from tfdp.attacks.model_inversion import evaluate_reconstructions
from tfdp.attacks.model_inversion import InversionGAN
from tfdp.attacks.model_inversion import margin_loss
from tfdp.attacks.model_inversion import reconstruct
from tfdp.attacks.model_inversion import top_n_selection

__all__ = ["InversionGAN", "conditional_gan", "evaluate_reconstructions",
           "margin_loss", "model_inversion", "reconstruct", "top_n_selection"]
