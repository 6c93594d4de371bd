"""Imports tfdp first, so that tf.keras is Keras 2 on every TensorFlow.

From TensorFlow 2.16 on, `tfdp._keras2.use_keras_2` must run before any test
module uses tf.keras (see README, "TensorFlow versions").
"""

import tfdp  # pylint: disable=unused-import
