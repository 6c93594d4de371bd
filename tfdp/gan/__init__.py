"""DP generative models (issue 12); for now the LOGAN membership attack.

`logan.success_rate` ranks candidate images by a discriminator's score and
measures how many training members reach the top (Hayes et al., "LOGAN:
Membership Inference Attacks Against Generative Models", PoPETs 2019,
white-box attack). The DP discriminator and generator steps follow.
"""

from tfdp.gan import logan
from tfdp.gan.logan import LoganResult
from tfdp.gan.logan import success_rate

__all__ = ["LoganResult", "logan", "success_rate"]
