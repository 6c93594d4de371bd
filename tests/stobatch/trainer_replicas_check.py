"""Run as a script: StoBatch gradients on 4 logical CPU replicas and on 1.

The same global batch (4 replicas x m examples), the same weights and the
same fixed noise (seeded): the averaged update direction of the 4-replica
step must equal the single-replica one. Prints one JSON line.
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
from tfdp.stobatch import replicas
STRATEGY = replicas.replica_strategy(4, allow_cpu_replicas=True)
import numpy as np
import tensorflow as tf
# Grappler on the unrolled attack graph dominates this small check: skip it.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
from tfdp.stobatch import models
from tfdp.stobatch import trainer as trainer_lib

M = 6  # per replica; a multiple of the 2 attacks below.
CONFIG = trainer_lib.TrainerConfig(attacks=("ifgsm", "mim"), attack_steps=1,
                                   max_attack_size=0.3, noise_seed=3)


def _trainer(strategy):
  with strategy.scope():
    model, _ = models.build_stobatch_model(
        "mnist", num_classes=10, epsilon_ae=50.0, epsilon_out=50.0,
        batch_size=M, seed=0, noise_seed=1, num_batches=8)
  return trainer_lib.StoBatchTrainer(model, strategy, CONFIG)


rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, size=(4 * M, 28, 28, 1)).astype(np.float32)
y = rng.integers(0, 10, 4 * M)
xa = rng.uniform(-1, 1, size=(4 * M, 28, 28, 1)).astype(np.float32)
ya = rng.integers(0, 10, 4 * M)

four = _trainer(STRATEGY)
one = _trainer(tf.distribute.get_strategy())
one.model.set_weights(four.model.get_weights())
# Fixed batches 0-3 benign, 4-7 adversarial: each with its own noise draw.
draw, draw_a = np.repeat(np.arange(4), M), np.repeat(np.arange(4, 8), M)
g4 = four.gradients(x, y, xa, ya, draw, draw_a, 0.2)
g1 = one.gradients(x, y, xa, ya, draw, draw_a, 0.2)


def _relative(a, b):
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


error = max(_relative(a, b) for a, b in zip(g4, g1))
# A different global batch gives a different gradient (the check is not
# vacuous).
other = one.gradients(xa, ya, x, y, draw_a, draw, 0.2)
moved = min(_relative(a, b) for a, b in zip(other, g1))
print(json.dumps({"replicas": STRATEGY.num_replicas_in_sync,
                  "error": error, "moved": moved,
                  "count": len(g1)}))
