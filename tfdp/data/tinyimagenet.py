"""Tiny ImageNet from the raw ``tiny-imagenet-200`` folder (no download).

The folder, as the official archive
http://cs231n.stanford.edu/tiny-imagenet-200.zip unpacks it::

  tiny-imagenet-200/
    wnids.txt                    one WordNet id per line: the class order
    train/<wnid>/images/*.JPEG   500 images of each class
    val/images/*.JPEG            10,000 images of all classes
    val/val_annotations.txt      file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1

`load_tiny_imagenet` keeps the first `num_classes` classes of ``wnids.txt``
(30 by default, StoBatch's setting), labels them 0..num_classes-1 in that
order, reads ``train/`` as the training split and the labelled ``val/`` as
the test split (``test/`` has no labels and is not read). Images are 64x64
RGB JPEGs (a few are grey-scale; they are decoded to 3 channels), returned
as float32 NHWC in [0, 1].
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tfdp import _validation
from tfdp.data.datasets import ImageDataset
from tfdp.data.datasets import Split

IMAGE_SIDE = 64
DEFAULT_NUM_CLASSES = 30

_LAYOUT = ("expected the tiny-imagenet-200 layout: DATA_DIR/wnids.txt, "
           "DATA_DIR/train/<wnid>/images/*.JPEG and "
           "DATA_DIR/val/images/*.JPEG with DATA_DIR/val/val_annotations.txt "
           "(file<TAB>wnid<TAB>bbox)")


def _missing(what: str, path: str) -> FileNotFoundError:
  return FileNotFoundError(f"data_dir: {what} not found at {path}; {_LAYOUT}")


def _read_wnids(data_dir: str) -> List[str]:
  path = os.path.join(data_dir, "wnids.txt")
  if not os.path.isfile(path):
    raise _missing("wnids.txt", path)
  with open(path) as f:
    wnids = [line.strip() for line in f if line.strip()]
  if len(set(wnids)) != len(wnids):
    raise ValueError(f"data_dir: {path} lists a class twice")
  return wnids


def _is_jpeg(name: str) -> bool:
  return name.lower().endswith((".jpeg", ".jpg"))


def _train_files(data_dir: str, wnids: Sequence[str],
                 max_per_class: Optional[int]
                 ) -> Tuple[List[str], List[int]]:
  files, labels = [], []
  for label, wnid in enumerate(wnids):
    folder = os.path.join(data_dir, "train", wnid, "images")
    if not os.path.isdir(folder):
      raise _missing(f"the images folder of class {wnid!r}", folder)
    names = sorted(n for n in os.listdir(folder) if _is_jpeg(n))
    if not names:
      raise ValueError(f"data_dir: {folder} holds no .JPEG images; {_LAYOUT}")
    names = names[:max_per_class]
    files += [os.path.join(folder, n) for n in names]
    labels += [label] * len(names)
  return files, labels


def _val_files(data_dir: str, classes: Dict[str, int],
               max_per_class: Optional[int]) -> Tuple[List[str], List[int]]:
  path = os.path.join(data_dir, "val", "val_annotations.txt")
  if not os.path.isfile(path):
    raise _missing("val/val_annotations.txt", path)
  folder = os.path.join(data_dir, "val", "images")
  per_class: Dict[int, List[str]] = {label: [] for label in classes.values()}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      fields = line.rstrip("\n").split("\t")
      if len(fields) < 2:
        raise ValueError(f"data_dir: line {number} of {path} must be "
                         f"file<TAB>wnid<TAB>..., got {line.strip()!r}")
      if fields[1] in classes:
        per_class[classes[fields[1]]].append(fields[0])
  files, labels = [], []
  for label, names in per_class.items():
    for name in sorted(names)[:max_per_class]:
      image = os.path.join(folder, name)
      if not os.path.isfile(image):
        raise _missing(f"validation image {name!r} (listed in {path})", image)
      files.append(image)
      labels.append(label)
  if not files:
    raise ValueError(f"data_dir: {path} lists no image of the first "
                     f"{len(classes)} classes of wnids.txt")
  return files, labels


def _decode(files: Sequence[str]) -> np.ndarray:
  """JPEGs as uint8 [N, 64, 64, 3] (grey images repeated to 3 channels)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  images = np.empty((len(files), IMAGE_SIDE, IMAGE_SIDE, 3), np.uint8)
  for i, path in enumerate(files):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False).numpy()
    if image.shape != (IMAGE_SIDE, IMAGE_SIDE, 3):
      raise ValueError(f"data_dir: {path} is {image.shape[1]}x"
                       f"{image.shape[0]}, Tiny ImageNet images are "
                       f"{IMAGE_SIDE}x{IMAGE_SIDE}")
    images[i] = image
  return images


def _split(files: Sequence[str], labels: Sequence[int]) -> Split:
  return Split(_decode(files).astype(np.float32) / np.float32(255.0),
               np.asarray(labels, np.int64))


def load_tiny_imagenet(data_dir: Union[str, os.PathLike],
                       num_classes: int = DEFAULT_NUM_CLASSES,
                       max_per_class: Optional[int] = None) -> ImageDataset:
  """Loads the first `num_classes` classes of a raw tiny-imagenet-200 folder.

  Classes are the first `num_classes` lines of ``wnids.txt``, labelled in
  that order. Training images are read from ``train/<wnid>/images/`` (in
  sorted file-name order), test images from ``val/images/`` with their
  labels from ``val/val_annotations.txt`` (images of other classes are
  skipped).

  Example:
    >>> data = load_tiny_imagenet("tiny-imagenet-200")  # doctest: +SKIP
    >>> data.input_shape, data.num_classes  # doctest: +SKIP
    ((64, 64, 3), 30)

  Args:
    data_dir: The ``tiny-imagenet-200`` folder.
    num_classes: How many classes to keep, from 2 to the number of lines of
      ``wnids.txt`` (200 in the real dataset).
    max_per_class: If set, at most this many images per class from each
      split (the first in file-name order): for quick runs.

  Returns:
    An `ImageDataset` named "tinyimagenet" with float32 images [N, 64, 64, 3]
    in [0, 1] and int64 labels in [0, num_classes).

  Raises:
    FileNotFoundError: if `data_dir` or a file or folder of the layout is
      missing (the message names the path and the expected layout).
    ValueError: for a bad `num_classes` or `max_per_class`, or malformed
      content (an empty class folder, an annotation line without a wnid,
      an image that is not 64x64).
  """
  num_classes = _validation.check_positive_int("num_classes", num_classes)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  if max_per_class is not None:
    max_per_class = _validation.check_positive_int("max_per_class",
                                                   max_per_class)
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data_dir {data_dir!r} is not a folder; "
                            f"{_LAYOUT}")
  wnids = _read_wnids(data_dir)
  if num_classes > len(wnids):
    raise ValueError(f"num_classes must be <= the {len(wnids)} classes "
                     f"listed in {os.path.join(data_dir, 'wnids.txt')}, got "
                     f"{num_classes}")
  wnids = wnids[:num_classes]
  train = _split(*_train_files(data_dir, wnids, max_per_class))
  test = _split(*_val_files(data_dir, {w: i for i, w in enumerate(wnids)},
                            max_per_class))
  return ImageDataset(train=train, test=test, num_classes=num_classes,
                      name="tinyimagenet")


__all__ = ["DEFAULT_NUM_CLASSES", "IMAGE_SIDE", "load_tiny_imagenet"]
