"""Run as a script: DP training under MultiWorkerMirroredStrategy.

  python tests/multiworker_check.py ROOT INDEX PORT0 PORT1

runs worker INDEX of a two-worker cluster on localhost (TF_CONFIG is set
here, before TensorFlow starts); both workers must run at once. Each prints
one JSON line: the checks of tests/strategy_checks.py (worker 0's are
compared with the one-process reference by the test).
"""

import json
import os
import sys

_ROOT, _INDEX, *_PORTS = sys.argv[1:]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"localhost:{port}" for port in _PORTS]},
    "task": {"type": "worker", "index": int(_INDEX)}})

sys.path.insert(0, _ROOT)
# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

from tests import strategy_checks
# pylint: enable=g-import-not-at-top,wrong-import-position


def main():
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  print(json.dumps({"worker": int(_INDEX),
                    **strategy_checks.report(strategy)}))


if __name__ == "__main__":
  main()
