"""Tests for tfdp.data.load_tiny_imagenet on a fake tiny-imagenet-200 folder."""

import os
import shutil

import numpy as np
import pytest

from tests import tinyimagenet_fake as fake
from tfdp import data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fake.make(tmp_path_factory.mktemp("tiny"))


def _levels(split):
  """Each image's mean grey level, mapped back to its class index."""
  means = split.x.mean(axis=(1, 2, 3)) * 255
  return np.abs(means[:, None] - np.array(fake.LEVELS)[None]).argmin(axis=1)


def test_shapes_ranges_and_labels_follow_wnids(data_dir):
  ds = data.load_tiny_imagenet(data_dir, num_classes=4)
  assert ds.name == "tinyimagenet" and ds.num_classes == 4
  assert ds.input_shape == (64, 64, 3)
  for split, per_class in ((ds.train, 4), (ds.test, 2)):
    assert split.x.dtype == np.float32 and split.y.dtype == np.int64
    assert 0 <= split.x.min() and split.x.max() <= 1
    np.testing.assert_array_equal(np.bincount(split.y), [per_class] * 4)
    # Label c holds the images of the c-th line of wnids.txt.
    np.testing.assert_array_equal(_levels(split), split.y)
  # The grey-scale JPEG came back with 3 equal channels.
  grey = ds.train.x[0]
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_val_annotations_decide_test_labels(data_dir):
  # val_i.JPEG files interleave the classes; the class not in wnids.txt
  # (val_other.JPEG) is skipped.
  ds = data.load_tiny_imagenet(data_dir, num_classes=4)
  assert len(ds.test) == 8
  np.testing.assert_array_equal(_levels(ds.test), ds.test.y)


def test_num_classes_subset_and_max_per_class(data_dir):
  ds = data.load_tiny_imagenet(data_dir, num_classes=2, max_per_class=3)
  assert ds.num_classes == 2
  np.testing.assert_array_equal(np.bincount(ds.train.y), [3, 3])
  np.testing.assert_array_equal(np.bincount(ds.test.y), [2, 2])
  assert set(_levels(ds.train)) == {0, 1}


def test_default_is_thirty_classes(data_dir):
  with pytest.raises(ValueError, match=r"num_classes must be <= the 4 "
                     r"classes listed in .*wnids.txt, got 30"):
    data.load_tiny_imagenet(data_dir)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes must be >= 2"),
    ({"num_classes": 2.0}, "num_classes must be an integer"),
    ({"max_per_class": 0}, "max_per_class must be an integer >= 1"),
])
def test_bad_arguments(data_dir, kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.load_tiny_imagenet(data_dir, **kwargs)


def test_missing_folder_names_data_dir_and_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"data_dir .* is not a folder;"
                     r" expected the tiny-imagenet-200 layout"):
    data.load_tiny_imagenet(tmp_path / "nope")
  # A folder without wnids.txt (e.g. its parent given by mistake).
  with pytest.raises(FileNotFoundError, match=r"data_dir: wnids.txt not "
                     r"found at .*expected the tiny-imagenet-200 layout"):
    data.load_tiny_imagenet(tmp_path)


@pytest.mark.parametrize("remove, message", [
    (os.path.join("train", "n0002"), r"images folder of class 'n0002'"),
    (os.path.join("val", "val_annotations.txt"), "val/val_annotations.txt"),
    (os.path.join("val", "images", "val_1.JPEG"), "validation image "
     "'val_1.JPEG'"),
])
def test_missing_parts_of_the_layout(tmp_path, remove, message):
  data_dir = fake.make(tmp_path)
  path = os.path.join(data_dir, remove)
  if os.path.isdir(path):
    shutil.rmtree(path)
  else:
    os.remove(path)
  with pytest.raises(FileNotFoundError, match=message):
    data.load_tiny_imagenet(data_dir, num_classes=3)


def test_wrong_image_size_is_refused(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data_dir = fake.make(tmp_path)
  path = os.path.join(data_dir, "train", "n0001", "images", "n0001_1.JPEG")
  with open(path, "wb") as f:
    f.write(tf.io.encode_jpeg(np.zeros((32, 32, 3), np.uint8)).numpy())
  with pytest.raises(ValueError, match=r"n0001_1.JPEG is 32x32, Tiny "
                     r"ImageNet images are 64x64"):
    data.load_tiny_imagenet(data_dir, num_classes=2)
