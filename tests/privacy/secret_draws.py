"""Run as a script: draws after tf.keras.utils.set_random_seed(0); one JSON line.

tests/privacy/test_secret_randomness.py runs it twice and compares.
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from tfdp import data
from tfdp.privacy import mechanisms

tf.keras.utils.set_random_seed(0)
gaussian = tf.function(lambda: mechanisms.gaussian_noise(
    [4], l2_sensitivity=1.0, noise_multiplier=1.0))
laplace = tf.function(lambda: mechanisms.laplace_noise(
    [4], l1_sensitivity=1.0, epsilon=1.0))
x = np.arange(200, dtype=np.float32).reshape(100, 2)
first_batch = next(iter(data.poisson_batches(x, np.zeros(100), 10).dataset))
print(json.dumps({
    "gaussian_eager": mechanisms.gaussian_noise(
        [4], l2_sensitivity=1.0, noise_multiplier=1.0).numpy().tolist(),
    "gaussian_graph": gaussian().numpy().tolist(),
    "laplace_eager": mechanisms.laplace_noise(
        [4], l1_sensitivity=1.0, epsilon=1.0).numpy().tolist(),
    "laplace_graph": laplace().numpy().tolist(),
    "batch": first_batch[0][:, 0].numpy().tolist(),
    # Control: what the global seed does fix.
    "tf_random_normal": tf.random.normal([4]).numpy().tolist(),
}))
