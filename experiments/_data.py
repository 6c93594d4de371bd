"""Shared data loading for the experiments, from the flags in flags/data.py."""

import dataclasses
import os
from typing import Tuple

from absl import app
from absl import logging
import numpy as np

from flags import data as data_flags
import tfdp


# The MNIST test set these machines hold (see its README): what
# --dataset=mnist reads, with a warning, when TFDS has no MNIST prepared.
OFFLINE_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             os.pardir, os.pardir, "shared", "data",
                             "mnist_test.npz")


def _is_npz(name: str) -> bool:
  return name.endswith(".npz")


def _load_tfds(name: str) -> tfdp.data.ImageDataset:
  try:
    return tfdp.data.load_tfds(name, data_dir=data_flags.TFDS_DATA_DIR.value)
  except tfdp.data.DatasetNotPreparedError:
    if name != "mnist" or not os.path.exists(OFFLINE_MNIST):
      raise
  path = os.path.normpath(OFFLINE_MNIST)
  logging.warning("TFDS has no MNIST prepared: reading the 10,000-image "
                  "MNIST test set from %s (split --test_fraction), as "
                  "--npz=%s would.", path, path)
  return tfdp.data.load_npz(path, test_fraction=data_flags.TEST_FRACTION.value,
                            seed=data_flags.SPLIT_SEED.value, name="mnist")


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
    return _load_tfds(name)
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


def public_slice(train: tfdp.data.Split,
                 count: int) -> Tuple[np.ndarray, tfdp.data.Split]:
  """(public images, the rest): `count` training images set aside as public.

  A random slice fixed by --split_seed, e.g. the public batch of
  public-batch normalisation; the rest stays the private training set.
  """
  if count >= len(train):
    raise app.UsageError(f"cannot set {count} public images aside from a "
                         f"training split of {len(train)}")
  order = np.random.default_rng(data_flags.SPLIT_SEED.value).permutation(
      len(train))
  public, private = order[:count], order[count:]
  return train.x[public], tfdp.data.Split(train.x[private], train.y[private])
