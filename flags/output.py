"""Output flags: where logs and results go, and how verbose."""

from absl import flags

OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "runs",
    "Directory for TensorBoard logs, checkpoints and results.json.")
VERBOSE = flags.DEFINE_integer("verbose", 1,
                               "Keras verbosity: 0 silent, 1 progress bar, "
                               "2 one line per epoch.",
                               lower_bound=0, upper_bound=2)
RESUME = flags.DEFINE_bool(
    "resume", False,
    "Continue the latest run of this experiment under --output_dir from its "
    "backup (model, optimizer slots and privacy accountant, saved every "
    "epoch by tf.keras.callbacks.BackupAndRestore), e.g. after a crash or a "
    "kill. The privacy accountant then counts the restored run's steps once. "
    "Without it, each run starts in a new directory.")
