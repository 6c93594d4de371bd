"""Data flags: which dataset, and how it is split into train, validation, test.

`experiments._data.load_dataset` reads them.
"""

from absl import flags

import flags as shared_flags

DATASET = flags.DEFINE_string(
    "dataset", "digits",
    "digits (embedded), mnist (TFDS, or --npz), cifar10 (TFDS), or the path "
    "of an .npz file with images x and labels y.")
NPZ = flags.DEFINE_string(
    "npz", None,
    "Read the dataset from this .npz file (x: images, e.g. uint8 (N, 28, 28) "
    "for MNIST; y: labels) instead of --dataset's source, split as for an "
    ".npz dataset; it is named after --dataset (mnist, ...), or after the "
    "file when --dataset is left at digits.")
TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None, "TFDS data directory for mnist and cifar10.")
TEST_FRACTION = flags.DEFINE_float(
    "test_fraction", 0.2,
    "For .npz data (and digits): fraction held out for testing, in (0, 1) "
    "(0.2 of 10,000 gives 8,000 train / 2,000 test).")
VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction", 0.0,
    "For model selection: if > 0, this fraction of the training split (fixed "
    "by --split_seed, stratified) is held out, training uses the rest, and "
    "everything reported as test is measured on the held-out validation "
    "examples; the test split is not used. In [0, 1).")
SPLIT_SEED = flags.DEFINE_integer(
    "split_seed", 0, "Seed of the train/test (and validation) split, and of "
    "any other fixed slice of the data; fixed across runs so every run sees "
    "the same data.", lower_bound=0)

shared_flags.check_range(TEST_FRACTION, above=0, below=1)
shared_flags.check_range(VALIDATION_FRACTION, at_least=0, below=1)
