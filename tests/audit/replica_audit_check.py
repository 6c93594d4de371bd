"""Run as a script: the white-box audit under MirroredStrategy on 2 CPUs.

Audits the correct trainer and the per-replica noise fault (every replica
adds noise at 1 / B of sigma C, the average's scale, to its share of the
sum) at a claimed epsilon of 2. Logical devices must be configured before
TensorFlow initialises, hence a fresh process. Prints one JSON line.
"""

import json
import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, sys.argv[1])
from tests.audit import test_whitebox  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  report = {"replicas": strategy.num_replicas_in_sync}
  for fault, kwargs in (("none", {}), ("replica_noise",
                                        {"scale": 1 / test_whitebox.EXAMPLES})):
    result = test_whitebox.audit(fault, claimed_epsilon=2.0,
                                 runs_per_side=150, strategy=strategy,
                                 **kwargs)
    report[fault] = result.bound.epsilon
  print(json.dumps(report))


if __name__ == "__main__":
  main()
