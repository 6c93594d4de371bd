"""Optional packages that need a particular TensorFlow: one message each.

TensorFlow Privacy 0.9.0 (the benchmark's baselines) and its
membership-inference tools (tensorflow-empirical-privacy, for
`tfdp.audit.membership`) import on TensorFlow 2.15 only. Everything else in
tfdp runs on TensorFlow 2.15 to 2.21.
"""

import importlib
from typing import Optional

TENSORFLOW_PRIVACY_INSTALL = (
    'pip install -e ".[tf215,audit]" (TensorFlow 2.15.1 with '
    "tensorflow-privacy 0.9.0 and tensorflow-empirical-privacy 0.1.0; "
    "TensorFlow Privacy imports on TensorFlow <= 2.15 only)")


def missing_tensorflow_privacy(module: str = "tensorflow_privacy"
                               ) -> Optional[str]:
  """None if `module` (of TensorFlow Privacy) imports, else why and the fix."""
  try:
    importlib.import_module(module)
  except Exception as error:  # pylint: disable=broad-except
    # ImportError when absent; on TensorFlow >= 2.16 an installed copy fails
    # with whatever its first incompatible import raises.
    return (f"{module} cannot be imported here ({type(error).__name__}: "
            f"{str(error)[:200]}); install it with "
            f"{TENSORFLOW_PRIVACY_INSTALL}")
  return None
