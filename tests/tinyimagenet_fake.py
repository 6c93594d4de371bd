"""A tiny fake tiny-imagenet-200 folder for tests (real layout, few images).

Class c of ``WNIDS`` has flat images of grey level ``LEVELS[c]`` (so labels
can be read back from pixels despite JPEG loss); the first training image
of the first class is a one-channel (grey-scale) JPEG, as a few real ones
are.
"""

import os

import numpy as np
import tensorflow as tf

WNIDS = ("n0001", "n0002", "n0003", "n0004")
LEVELS = (30, 90, 150, 210)


def _write_jpeg(path, level, channels=3):
  image = np.full((64, 64, channels), level, np.uint8)
  with open(path, "wb") as f:
    f.write(tf.io.encode_jpeg(image, quality=95).numpy())


def make(root, train_per_class=4, val_per_class=2):
  """Writes the folder under `root`; returns its path.

  Validation images are named so that their sorted order interleaves
  classes, and one more of a class not in wnids.txt is annotated.
  """
  root = os.fspath(root)
  data_dir = os.path.join(root, "tiny-imagenet-200")
  os.makedirs(os.path.join(data_dir, "val", "images"))
  with open(os.path.join(data_dir, "wnids.txt"), "w") as f:
    f.write("\n".join(WNIDS) + "\n")
  for c, wnid in enumerate(WNIDS):
    folder = os.path.join(data_dir, "train", wnid, "images")
    os.makedirs(folder)
    with open(os.path.join(data_dir, "train", wnid, f"{wnid}_boxes.txt"),
              "w") as f:
      f.write("")
    for i in range(train_per_class):
      _write_jpeg(os.path.join(folder, f"{wnid}_{i}.JPEG"), LEVELS[c],
                  channels=1 if (c, i) == (0, 0) else 3)
  lines = []
  for i in range(val_per_class):
    for c, wnid in enumerate(WNIDS):
      name = f"val_{i * len(WNIDS) + c}.JPEG"
      _write_jpeg(os.path.join(data_dir, "val", "images", name), LEVELS[c])
      lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
  _write_jpeg(os.path.join(data_dir, "val", "images", "val_other.JPEG"), 0)
  lines.append("val_other.JPEG\tn9999\t0\t0\t63\t63")
  with open(os.path.join(data_dir, "val", "val_annotations.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return data_dir
