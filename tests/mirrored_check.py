"""Run as a script: DP training under MirroredStrategy on 2 logical CPUs.

Logical devices must be configured before TensorFlow initialises its
devices, so the test runs this in a fresh process. Prints one JSON line.
"""

import json
import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, sys.argv[1])
from tests import strategy_checks  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  print(json.dumps(strategy_checks.report(strategy)))


if __name__ == "__main__":
  main()
