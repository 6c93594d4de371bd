"""Labelled image datasets as numpy arrays: embedded digits, npz files, TFDS.

Every loader returns an `ImageDataset` whose images are float32 NHWC arrays
with values in [0, 1] and whose labels are int64 class indices.

Machines without network access cannot download datasets. `load_digits`
always works (scikit-learn ships the data); `load_npz` reads a local file;
`load_tfds` reads a TFDS data directory prepared elsewhere and raises
`DatasetNotPreparedError`, with instructions, when the data is not there.
"""

import dataclasses
import math
import os
from typing import Optional, Tuple, Union

import numpy as np

from tfdp import _validation

TFDS_DATASETS = ("mnist", "kmnist", "fashion_mnist", "cifar10", "cifar100")

# Examples per chunk when reading a TFDS split into memory.
_TFDS_CHUNK = 10_000


class DatasetNotPreparedError(RuntimeError):
  """A TFDS dataset is not in the data directory and cannot be downloaded."""


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a labelled image dataset.

  Attributes:
    x: float32 images, shape (N, H, W, C), values in [0, 1].
    y: int64 labels, shape (N,).
  """
  x: np.ndarray
  y: np.ndarray

  def __len__(self) -> int:
    return len(self.y)


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """A labelled image dataset with a train and a test split.

  Attributes:
    train: the training split.
    test: the test split.
    num_classes: number of classes; labels lie in [0, num_classes).
    name: a short name for logs and result tables.
  """
  train: Split
  test: Split
  num_classes: int
  name: str

  @property
  def input_shape(self) -> Tuple[int, ...]:
    """Shape (H, W, C) of one image."""
    return tuple(self.train.x.shape[1:])


def _to_unit_float(name: str, x: np.ndarray) -> np.ndarray:
  """Returns images as float32 in [0, 1]: uint8 is divided by 255.

  Float images must be finite (a NaN or infinite pixel is refused, naming
  the first bad image) and lie in [0, 1].
  """
  if x.dtype == np.uint8:
    return x.astype(np.float32) / np.float32(255.0)
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(
        f"{name} must be uint8 (0..255) or float in [0, 1], got dtype "
        f"{x.dtype}")
  _validation.check_finite_rows(name, x)
  if x.size and not np.all((x >= 0) & (x <= 1)):
    raise ValueError(
        f"{name} must hold float values in [0, 1], got values in "
        f"[{x.min()}, {x.max()}]")
  return x.astype(np.float32)


def _train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float,
                      seed: int) -> Tuple[Split, Split]:
  """Splits (x, y) into train and test with a fixed seed.

  The split is stratified by label (each class keeps its overall proportion
  on both sides, to within one example) when that is possible: every class
  has at least two examples and each side has room for one of each class.
  Otherwise it is a plain seeded random split.
  """
  import sklearn.model_selection  # pylint: disable=g-import-not-at-top

  n = len(y)
  n_test = math.ceil(test_fraction * n)  # How scikit-learn rounds it.
  if n_test < 1 or n - n_test < 1:
    raise ValueError(
        f"cannot split {n} examples with test_fraction={test_fraction}: both "
        "the train and the test split need at least one example")
  counts = np.bincount(y)
  counts = counts[counts > 0]
  stratifiable = (counts.min() >= 2 and n_test >= len(counts)
                  and n - n_test >= len(counts))
  x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
      x, y, test_size=n_test, random_state=seed,
      stratify=y if stratifiable else None)
  return Split(x_train, y_train), Split(x_test, y_test)


def _check_split_args(test_fraction: float, seed: int) -> None:
  _validation.check_open_unit_interval("test_fraction", test_fraction)
  _validation.check_non_negative_int("seed", seed)


def split(data: Split, fraction: float, *,
          seed: int = 0) -> Tuple[Split, Split]:
  """Holds out a fraction of a split, e.g. a validation set from `train`.

  Stratified by label where possible and fixed by `seed`, as the train/test
  split of the loaders.

  Args:
    data: the split to divide.
    fraction: fraction of its examples held out, in (0, 1).
    seed: seed of the split (scikit-learn's `random_state`).

  Returns:
    (rest, held_out): two disjoint splits that together hold `data`.

  Raises:
    ValueError: for a fraction outside (0, 1) or one that leaves a side
      empty.
  """
  _validation.check_open_unit_interval("fraction", fraction)
  _validation.check_non_negative_int("seed", seed)
  return _train_test_split(data.x, data.y, fraction, seed)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
  """Loads scikit-learn's embedded handwritten digits (no download needed).

  1,797 real 8x8 grey-scale images of the digits 0-9 with integer pixel
  values 0..16, scaled to x = value / 16 in [0, 1] and shaped (8, 8, 1).
  The train/test split is stratified by label and fixed by `seed`, so the
  same arguments give the same arrays on every call.

  Args:
    test_fraction: fraction of the examples in the test split, in (0, 1).
    seed: seed of the split (scikit-learn's `random_state`).

  Returns:
    The dataset, named "digits", with 10 classes.
  """
  import sklearn.datasets  # pylint: disable=g-import-not-at-top

  _check_split_args(test_fraction, seed)
  digits = sklearn.datasets.load_digits()
  x = (digits.images[..., np.newaxis] / 16.0).astype(np.float32)
  y = digits.target.astype(np.int64)
  train, test = _train_test_split(x, y, test_fraction, seed)
  return ImageDataset(train=train, test=test, num_classes=10, name="digits")


def fit_to_frame(images: np.ndarray, side: int = 28,
                 box: int = 20) -> np.ndarray:
  """Resizes images to box x box (bilinear) and centres them on a black
  side x side frame, as MNIST was made (digits fitted to 20x20 in 28x28).

  E.g. scikit-learn's 8x8 digits as MNIST-sized images: a public set of
  another distribution for MNIST models.

  Args:
    images: [N, H, W, C] in [0, 1].
    side: the output's height and width, >= 1.
    box: the resized image's height and width, in [1, side].

  Returns:
    float32 [N, side, side, C] in [0, 1].

  Example:
    >>> fit_to_frame(np.ones([2, 8, 8, 1], np.float32)).shape
    (2, 28, 28, 1)
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  side = _validation.check_positive_int("side", side)
  box = _validation.check_positive_int("box", box)
  if box > side:
    raise ValueError(f"box must be at most side={side}, got {box}")
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  resized = tf.image.resize(images, [box, box], method="bilinear",
                            antialias=True).numpy()
  before = (side - box) // 2
  after = side - box - before
  framed = np.pad(resized, [(0, 0), (before, after), (before, after), (0, 0)])
  return np.clip(framed, 0.0, 1.0)


def load_npz(path: Union[str, os.PathLike],
             *,
             test_fraction: float = 0.2,
             seed: int = 0,
             name: Optional[str] = None) -> ImageDataset:
  """Loads a labelled image dataset from a numpy `.npz` file.

  The file holds an array `x` of images, shape (N, H, W) or (N, H, W, C),
  either uint8 (0..255, divided by 255) or float with finite values in [0, 1]
  (no NaN or infinity), and an array `y` of N non-negative integer labels.
  Grey-scale (N, H, W) images get a channel axis of size 1. The examples are
  split into train and test as in `load_digits` (stratified by label where
  possible, fixed by `seed`).

  Args:
    path: path of the `.npz` file.
    test_fraction: fraction of the examples in the test split, in (0, 1).
    seed: seed of the split.
    name: dataset name; defaults to the file name without its extension.

  Returns:
    The dataset, with num_classes = max(y) + 1.

  Raises:
    FileNotFoundError: if there is no file at `path`.
    ValueError: if an array is missing, empty, of the wrong rank, dtype or
      range, or if `x` and `y` differ in length.
  """
  _check_split_args(test_fraction, seed)
  whole = read_npz(path)
  train, test = _train_test_split(whole.x, whole.y, test_fraction, seed)
  if name is None:
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
  return ImageDataset(train=train, test=test,
                      num_classes=int(whole.y.max()) + 1, name=name)


def read_npz(path: Union[str, os.PathLike]) -> Split:
  """All the labelled images of an `.npz` file, as one split.

  For image sets used whole, e.g. synthetic images from a generator
  (`write_npz`) for a non-private warm-up. The arrays are checked as by
  `load_npz`.

  Args:
    path: path of the `.npz` file with images `x` and labels `y`.

  Returns:
    A `Split`: float32 images in [0, 1] with a channel axis, int64 labels.

  Raises:
    FileNotFoundError: if there is no file at `path`.
    ValueError: if an array is missing, empty, of the wrong rank, dtype or
      range, or if `x` and `y` differ in length.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"npz dataset file not found: {path}")
  with np.load(path, allow_pickle=False) as data:
    for key in ("x", "y"):
      if key not in data:
        raise ValueError(
            f"{path} has no array {key!r}; it holds {sorted(data.files)} "
            "(expected images 'x' and labels 'y')")
    x, y = data["x"], data["y"]

  if x.ndim not in (3, 4):
    raise ValueError(
        f"x in {path} must have shape (N, H, W) or (N, H, W, C), got shape "
        f"{x.shape}")
  if y.ndim != 1:
    raise ValueError(f"y in {path} must have shape (N,), got shape {y.shape}")
  if len(y) != len(x):
    raise ValueError(
        f"x and y in {path} must have the same length, got {len(x)} and "
        f"{len(y)}")
  if len(x) == 0:
    raise ValueError(f"x in {path} has 0 examples: the dataset is empty")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(
        f"y in {path} must hold integer labels, got dtype {y.dtype}")
  if y.min() < 0:
    raise ValueError(f"y in {path} must hold labels >= 0, got {y.min()}")

  x = _to_unit_float(f"x in {path}", x)
  if x.ndim == 3:
    x = x[..., np.newaxis]
  return Split(x, y.astype(np.int64))


def write_npz(path: Union[str, os.PathLike], images: np.ndarray,
              labels: np.ndarray) -> None:
  """Writes labelled images in [0, 1] as uint8 `x` and int64 `y`.

  The file reads back with `read_npz` (or `load_npz`), to within the
  1/255 of the uint8 rounding.

  Raises:
    ValueError: for images outside [0, 1] or a length mismatch.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if len(images) != len(labels):
    raise ValueError(f"images and labels must have the same length, got "
                     f"{len(images)} and {len(labels)}")
  _to_unit_float("images", images)  # checks the range
  np.savez_compressed(os.fspath(path),
                      x=np.round(images * 255).astype(np.uint8),
                      y=labels.astype(np.int64))


def _not_prepared_message(name: str, data_dir: Optional[str]) -> str:
  shown_dir = (data_dir or os.environ.get("TFDS_DATA_DIR")
               or "~/tensorflow_datasets")
  example_dir = data_dir or "DIR"
  return (
      f"TFDS dataset {name!r} is not prepared in data_dir={shown_dir!r}, and "
      "this machine cannot download it. On a machine with network access "
      f"run `tfds build {name} --data_dir {example_dir}` (or python -c "
      f"\"import tensorflow_datasets as tfds; tfds.load('{name}', "
      f"data_dir='{example_dir}')\"), then copy {example_dir} to this machine "
      f"and pass data_dir={example_dir!r} (or set TFDS_DATA_DIR). "
      "load_digits() needs no download.")


def _tfds_split_to_numpy(dataset, tfds) -> Split:
  """Reads a supervised (image, label) tf.data split into a `Split`."""
  images, labels = [], []
  for x, y in tfds.as_numpy(dataset.batch(_TFDS_CHUNK)):
    images.append(x)
    labels.append(y)
  return Split(_to_unit_float("image", np.concatenate(images)),
               np.concatenate(labels).astype(np.int64))


def load_tfds(
    name: str,
    data_dir: Optional[Union[str, os.PathLike]] = None) -> ImageDataset:
  """Loads the train and test splits of a TFDS image dataset into memory.

  Never downloads (`download=False`): the data must already be prepared in
  `data_dir` (default: $TFDS_DATA_DIR or ~/tensorflow_datasets). Images are
  scaled from uint8 to float32 in [0, 1]; labels are int64.

  Args:
    name: one of `TFDS_DATASETS`.
    data_dir: the TFDS data directory holding the prepared dataset.

  Returns:
    The dataset, with num_classes from the TFDS dataset info.

  Raises:
    ValueError: if `name` is not one of `TFDS_DATASETS`.
    DatasetNotPreparedError: if the data is not in `data_dir`; the message says
      how to prepare it on a machine with network access.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  _validation.check_choice("name", name, TFDS_DATASETS)
  data_dir = None if data_dir is None else os.fspath(data_dir)
  try:
    # batch_size=None, then chunked batching below: batch_size=-1 asks
    # tf.data for a batch of sys.maxsize when TFDS does not know the split
    # sizes (as under tfds.testing.mock_data), which aborts the process.
    (train, test), info = tfds.load(
        name, split=["train", "test"], data_dir=data_dir, download=False,
        as_supervised=True, with_info=True)
  except AssertionError as e:
    # What TFDS 4.9 raises for download=False and missing data ("Dataset
    # NAME: could not find data in DIR ...").
    raise DatasetNotPreparedError(_not_prepared_message(name, data_dir)) from e
  return ImageDataset(
      train=_tfds_split_to_numpy(train, tfds),
      test=_tfds_split_to_numpy(test, tfds),
      num_classes=info.features["label"].num_classes,
      name=name)
