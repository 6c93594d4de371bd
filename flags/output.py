"""Output flags: where logs and results go, and how verbose."""

from absl import flags

OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "runs",
    "Directory for TensorBoard logs, checkpoints and results.json.")
VERBOSE = flags.DEFINE_integer("verbose", 1,
                               "Keras verbosity: 0 silent, 1 progress bar, "
                               "2 one line per epoch.")
