"""Training flags: optimisation hyper-parameters and seeds."""

from absl import flags

import flags as shared_flags

EPOCHS = flags.DEFINE_integer("epochs", 20, "Planned number of epochs.",
                              lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64,
                                  "Expected batch size.", lower_bound=1)
LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.5,
                                   "Learning rate (> 0).")
MOMENTUM = flags.DEFINE_float("momentum", 0.0, "SGD momentum, in [0, 1].")
SEED = flags.DEFINE_integer("seed", 0, "Random seed.", lower_bound=0)

shared_flags.check_range(LEARNING_RATE, above=0)
shared_flags.check_range(MOMENTUM, at_least=0, at_most=1)
