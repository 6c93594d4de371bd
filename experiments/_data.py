"""Shared data loading for the experiments, from the flags in flags/data.py."""

import dataclasses
import os
from typing import Tuple

from absl import app

from flags import data as data_flags
import tfdp


def _is_npz(name: str) -> bool:
  return name.endswith(".npz")


def _load() -> tfdp.data.ImageDataset:
  """--dataset (or --npz) with its train/test split."""
  name = data_flags.DATASET.value
  fraction = data_flags.TEST_FRACTION.value
  seed = data_flags.SPLIT_SEED.value
  if data_flags.NPZ.value:
    path = data_flags.NPZ.value
    return tfdp.data.load_npz(
        path, test_fraction=fraction, seed=seed,
        name=(os.path.splitext(os.path.basename(path))[0]
              if name == "digits" else name))
  if name == "digits":
    return tfdp.data.load_digits(test_fraction=fraction, seed=seed)
  if name in ("mnist", "cifar10"):
    return tfdp.data.load_tfds(name, data_dir=data_flags.TFDS_DATA_DIR.value)
  if _is_npz(name):
    return tfdp.data.load_npz(name, test_fraction=fraction, seed=seed)
  raise app.UsageError(
      f"--dataset must be digits, mnist, cifar10 or a path ending in .npz, "
      f"got {name!r}")


def load_dataset() -> tfdp.data.ImageDataset:
  """The dataset the flags name: train and test (or validation) splits.

  With --validation_fraction > 0, the returned `test` split is the
  validation split carved out of the training split (stratified, fixed by
  --split_seed) and `train` is the rest, so that model selection never sees
  the test split; `evaluated_on()` says which it is.
  """
  if not data_flags.VALIDATION_FRACTION.value:
    return _load()
  dataset, validation = load_with_validation()
  return dataclasses.replace(dataset, test=validation)


def load_with_validation() -> Tuple[tfdp.data.ImageDataset, tfdp.data.Split]:
  """(dataset, validation): for runs that select on one and report another.

  The dataset's train split is the training split less the validation
  split (--validation_fraction of it, stratified, fixed by --split_seed);
  its test split is the held-out test split, read only for reporting.

  Raises:
    app.UsageError: if --validation_fraction is 0.
  """
  fraction = data_flags.VALIDATION_FRACTION.value
  if not fraction:
    raise app.UsageError("--validation_fraction must be > 0: model selection "
                         "must not read the held-out test split")
  dataset = _load()
  train, validation = tfdp.data.split(dataset.train, fraction,
                                      seed=data_flags.SPLIT_SEED.value)
  return dataclasses.replace(dataset, train=train), validation


def evaluated_on() -> str:
  """"validation" or "test": what `load_dataset()`'s test split holds."""
  return "validation" if data_flags.VALIDATION_FRACTION.value else "test"
