"""Training flags: optimisation hyper-parameters and seeds."""

from absl import flags

EPOCHS = flags.DEFINE_integer("epochs", 20, "Planned number of epochs.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64,
                                  "Expected batch size.")
LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.5, "Learning rate.")
MOMENTUM = flags.DEFINE_float("momentum", 0.0, "SGD momentum.")
SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
