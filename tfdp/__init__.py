"""tfdp: differentially private and adversarially robust deep learning for Keras.

Quick tour::

  import tensorflow as tf
  import tfdp

  model = tf.keras.Sequential([tf.keras.layers.Flatten(),
                               tf.keras.layers.Dense(10)])
  model.compile(
      optimizer=tfdp.optimizers.DPSGD(
          learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=1.1,
          expected_batch_size=64),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, reduction=tf.keras.losses.Reduction.NONE))

See README.md for a complete example with accounting.
"""

import os
import sys
import warnings

# TensorFlow prints start-up INFO and WARNING lines (CUDA, TensorRT, CPU
# features) from C++ at import. Hide them unless the user chose a level.
# With the audit extra installed, its import of google.api_core (through the
# GCE cluster resolver) warns about Google's future support of the Python
# version; nothing in tfdp depends on it.
if "tensorflow" not in sys.modules:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  warnings.filterwarnings("ignore", category=FutureWarning,
                          module="google.api_core")

# pylint: disable=g-import-not-at-top
from tfdp import _keras2

# Before anything uses tf.keras: Keras 2 (tf-keras) from TensorFlow 2.16 on.
_keras2.use_keras_2()

from tfdp import attacks
from tfdp import audit
from tfdp import callbacks
from tfdp import checkpointing
from tfdp import clipping
from tfdp import data
from tfdp import gan
from tfdp import layers
from tfdp import models
from tfdp import optimizers
from tfdp import privacy
from tfdp import public_gradients
from tfdp import robust
from tfdp import stobatch
from tfdp.private import make_private

__version__ = "0.1.0"

__all__ = ["attacks", "audit", "callbacks", "checkpointing",
           "clipping", "data", "gan", "layers",
           "models", "optimizers", "privacy", "robust", "stobatch",
           "make_private"]
