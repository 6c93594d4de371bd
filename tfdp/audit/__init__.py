"""Privacy auditing: empirical epsilon lower bounds and membership inference.

* `bounds`: epsilon lower bounds from a test's counts (Clopper-Pearson),
  from attack scores, and from one training run (Steinke et al. 2023).
* `canaries`: Dirac gradient canaries (white-box) and mislabeled input
  canaries (black-box).
* `whitebox`: the Dirac-canary audit of tfdp's DP-SGD, many runs or one.
* `blackbox`: the input-canary audit of a trained model.
* `membership`: TF Privacy's membership inference attacks and LiRA.

See docs/audit.md.
"""

from tfdp.audit import blackbox
from tfdp.audit import bounds
from tfdp.audit import canaries
from tfdp.audit import membership
from tfdp.audit import whitebox

__all__ = ["blackbox", "bounds", "canaries", "membership", "whitebox"]
