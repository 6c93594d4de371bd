"""Run as a script: the fast engine on an empty batch of static size 0.

Prints one JSON line: the clipped gradient sum's absolute total and the
number of norms. Without `fast._unknown_if_empty`, Grappler aborts this
process with SIGFPE (TensorFlow 2.15).
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

from tfdp.clipping import fast

model = tf.keras.Sequential([
    tf.keras.Input((4,)), tf.keras.layers.Dense(3),
    tf.keras.layers.Activation("relu"), tf.keras.layers.Dense(2)])


@tf.function
def clipped(x, y):
  result = fast.clipped_gradients(
      model, x, y, lambda labels, outputs: tf.reduce_sum(outputs, axis=-1),
      1.0)
  return result.gradient_sum, result.norms


sums, norms = clipped(tf.zeros([0, 4]), tf.zeros([0], tf.int64))
print(json.dumps({
    "total": float(sum(tf.reduce_sum(tf.abs(s)) for s in sums)),
    "shapes": [s.shape.as_list() for s in sums],
    "norms": int(tf.size(norms))}))
