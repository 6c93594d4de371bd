"""DP generative models: a private discriminator, a post-processed generator.

* `DPGAN` (`trainer`): the DP discriminator step on the fast clipping engine
  (modes gc, adaptive; is and none only with allow_no_dp), the generator
  step, and the accountant of D's steps plus the mean samples.
* `models`: MLP and DCGAN-style G and D with none / cgan / acgan heads.
* `mean_samples`: averaged, noised private images and their noise
  multiplier.
* `evaluation`: downstream accuracy on real images, a Frechet distance in a
  real-data classifier's features, sample grids.
* `logan.success_rate`: LOGAN's white-box membership attack (Hayes et al.,
  PoPETs 2019) on a discriminator's scores.
"""

from tfdp.gan import evaluation
from tfdp.gan import logan
from tfdp.gan import losses
from tfdp.gan import mean_samples
from tfdp.gan import models
from tfdp.gan.logan import LoganResult
from tfdp.gan.logan import success_rate
from tfdp.gan.trainer import DPGAN
from tfdp.gan.trainer import MODES
from tfdp.gan.trainer import NO_DP_NOTE

__all__ = ["DPGAN", "LoganResult", "MODES", "NO_DP_NOTE", "evaluation",
           "logan", "losses", "mean_samples", "models", "success_rate"]
