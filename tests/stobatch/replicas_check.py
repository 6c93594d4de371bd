"""Run as a script: replica_strategy in a fresh process; prints one JSON line.

argv: repo root. In order: 4 replicas refused without GPUs and without
allow_cpu_replicas (before devices initialise), 4 logical CPU replicas, and
5 refused once the devices are initialised.
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
from tfdp.stobatch import replicas
import tensorflow as tf

result = {}
try:
  replicas.replica_strategy(4, allow_cpu_replicas=False)
except ValueError as error:
  result["refused"] = str(error)
strategy = replicas.replica_strategy(4, allow_cpu_replicas=True)
result["replicas"] = strategy.num_replicas_in_sync
result["devices"] = list(strategy.extended.worker_devices)
values = strategy.run(
    lambda: tf.distribute.get_replica_context().replica_id_in_sync_group)
result["ids"] = sorted(int(v) for v in
                       strategy.experimental_local_results(values))
try:
  replicas.replica_strategy(5, allow_cpu_replicas=True)
except RuntimeError as error:
  result["too_late"] = str(error)
print(json.dumps(result))
