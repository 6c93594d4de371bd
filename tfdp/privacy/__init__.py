"""Privacy accounting (dp_accounting) and the noise mechanisms.

* `compute_epsilon`, `calibrate_noise_multiplier`, `dpsgd_event`: DP-SGD
  accounting for Poisson or fixed-size batch sampling.
* `PrivacyAccountant`: a checkpointable count of the steps actually taken.
* `gaussian_mechanism`, `laplace_mechanism` and their noise and scales.
"""

from tfdp.privacy.accountant import PrivacyAccountant
from tfdp.privacy.accounting import calibrate_noise_multiplier
from tfdp.privacy.accounting import compute_epsilon
from tfdp.privacy.accounting import dpsgd_event
from tfdp.privacy.accounting import FIXED_SIZE
from tfdp.privacy.accounting import PLD
from tfdp.privacy.accounting import POISSON
from tfdp.privacy.accounting import PrivacySpent
from tfdp.privacy.accounting import RDP
from tfdp.privacy.mechanisms import gaussian_mechanism
from tfdp.privacy.mechanisms import gaussian_noise
from tfdp.privacy.mechanisms import gaussian_stddev
from tfdp.privacy.mechanisms import laplace_mechanism
from tfdp.privacy.mechanisms import laplace_noise
from tfdp.privacy.mechanisms import laplace_scale
