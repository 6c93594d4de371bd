"""Tests for tfdp.data.datasets: digits, npz and TFDS loaders."""

import math

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from tfdp.data import datasets


def _rows(split):
  """Rows (flattened image, label), sorted, to compare splits as multisets."""
  rows = np.hstack([split.x.reshape(len(split), -1),
                    split.y[:, np.newaxis].astype(np.float32)])
  return rows[np.lexsort(rows.T[::-1])]


def _merge(a, b):
  return datasets.Split(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]))


_X = np.zeros((4, 2, 2), np.uint8)
_Y = np.array([0, 1, 0, 1])


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return path


# load_digits


def test_digits_shapes_dtypes_and_range():
  data = datasets.load_digits()
  assert data.name == "digits"
  assert data.num_classes == 10
  assert data.input_shape == (8, 8, 1)
  for split in (data.train, data.test):
    assert split.x.dtype == np.float32 and split.y.dtype == np.int64
    assert split.x.shape == (len(split), 8, 8, 1)
    assert split.x.min() == 0.0 and split.x.max() == 1.0
    assert set(np.unique(split.y)) == set(range(10))
  assert len(data.train) + len(data.test) == 1797
  assert len(data.test) == math.ceil(0.2 * 1797)


def test_digits_splits_partition_the_original_data():
  data = datasets.load_digits(test_fraction=0.3, seed=5)
  raw = sk_datasets.load_digits()
  original = datasets.Split(
      (raw.images[..., np.newaxis] / 16).astype(np.float32), raw.target)
  np.testing.assert_array_equal(
      _rows(_merge(data.train, data.test)), _rows(original))


def test_digits_is_deterministic_and_seed_dependent():
  a, b = datasets.load_digits(seed=3), datasets.load_digits(seed=3)
  np.testing.assert_array_equal(a.train.x, b.train.x)
  np.testing.assert_array_equal(a.test.y, b.test.y)
  c = datasets.load_digits(seed=4)
  assert not np.array_equal(a.test.x, c.test.x)


def test_digits_split_is_stratified():
  data = datasets.load_digits(test_fraction=0.25, seed=1)
  overall = np.bincount(np.concatenate([data.train.y, data.test.y]))
  for split in (data.train, data.test):
    expected = len(split) * overall / overall.sum()
    assert np.all(np.abs(np.bincount(split.y, minlength=10) - expected) <= 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"test_fraction": 0.0}, "test_fraction"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"seed": -1}, "seed"),
])
def test_digits_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    datasets.load_digits(**kwargs)


# split


def test_split_holds_out_a_stratified_fixed_part_of_a_split():
  train = datasets.load_digits().train
  rest, held_out = datasets.split(train, 0.125, seed=0)
  assert len(held_out) == math.ceil(0.125 * len(train))
  np.testing.assert_array_equal(_rows(_merge(rest, held_out)), _rows(train))
  expected = len(held_out) * np.bincount(train.y) / len(train)
  assert np.all(np.abs(np.bincount(held_out.y, minlength=10) - expected) <= 1)
  again, _ = datasets.split(train, 0.125, seed=0)
  np.testing.assert_array_equal(again.x, rest.x)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_split_bad_fraction(fraction):
  with pytest.raises(ValueError, match="fraction"):
    datasets.split(datasets.Split(_X.astype(np.float32), _Y), fraction)


# load_npz


def test_npz_uint8_grey_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(20, 5, 4), dtype=np.uint8)
  x[0, 0, 0], x[1, 0, 0] = 0, 255
  y = np.repeat(np.array([0, 2], dtype=np.uint8), 10)
  path = _write_npz(tmp_path / "toy.npz", x=x, y=y)
  data = datasets.load_npz(path, test_fraction=0.25, seed=0)
  assert data.name == "toy"
  assert data.num_classes == 3  # max(y) + 1, class 1 absent.
  assert data.input_shape == (5, 4, 1)
  assert (len(data.train), len(data.test)) == (15, 5)
  assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int64
  expected = datasets.Split((x[..., np.newaxis] / 255).astype(np.float32),
                            y.astype(np.int64))
  np.testing.assert_allclose(_rows(_merge(data.train, data.test)),
                             _rows(expected), rtol=1e-6)
  again = datasets.load_npz(str(path), test_fraction=0.25, seed=0, name="n")
  assert again.name == "n"
  np.testing.assert_array_equal(again.test.x, data.test.x)


def test_npz_float_rgb_kept(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(12, 3, 3, 3))
  y = np.arange(12) % 3
  data = datasets.load_npz(_write_npz(tmp_path / "rgb.npz", x=x, y=y))
  assert data.input_shape == (3, 3, 3)
  expected = datasets.Split(x.astype(np.float32), y)
  np.testing.assert_array_equal(_rows(_merge(data.train, data.test)),
                                _rows(expected))


def test_npz_single_example_class_gets_a_plain_split(tmp_path):
  # Stratifying needs two examples per class; one class has one.
  x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1)
  y = np.array([0] * 9 + [1])
  data = datasets.load_npz(_write_npz(tmp_path / "rare.npz", x=x, y=y))
  assert (len(data.train), len(data.test)) == (8, 2)
  assert data.num_classes == 2


def test_npz_one_example_cannot_be_split(tmp_path):
  path = _write_npz(tmp_path / "one.npz", x=_X[:1], y=_Y[:1])
  with pytest.raises(ValueError, match="cannot split 1 examples"):
    datasets.load_npz(path)


def test_npz_missing_file_names_the_path(tmp_path):
  path = tmp_path / "nope.npz"
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    datasets.load_npz(path)


@pytest.mark.parametrize("arrays, match", [
    ({"y": _Y}, "no array 'x'"),
    ({"x": _X, "labels": _Y}, "no array 'y'"),
    ({"x": _X, "y": _Y[:3]}, "same length, got 4 and 3"),
    ({"x": _X[:0], "y": _Y[:0]}, "dataset is empty"),
    ({"x": np.zeros((4, 4), np.uint8), "y": _Y}, r"shape \(N, H, W\)"),
    ({"x": _X, "y": _Y[:, None]}, r"y .* must have shape \(N,\)"),
    ({"x": _X + 2.0, "y": _Y}, r"values in \[0, 1\]"),
    ({"x": np.where(np.arange(4)[:, None, None] % 2, np.nan, 0.5),
      "y": _Y}, r"x in .* has 2 of 4 rows with NaN or infinite values, the "
     r"first at row 1: drop or impute"),
    ({"x": _X.astype(np.int32), "y": _Y}, "uint8"),
    ({"x": _X, "y": _Y - 1}, "labels >= 0"),
    ({"x": _X, "y": _Y + 0.5}, "integer labels"),
])
def test_npz_errors(tmp_path, arrays, match):
  path = _write_npz(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match=match):
    datasets.load_npz(path)


# load_tfds


@pytest.mark.parametrize("name, shape", [
    ("mnist", (28, 28, 1)),
    ("cifar10", (32, 32, 3)),
])
def test_tfds_with_mock_data(tmp_path, name, shape):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    data = datasets.load_tfds(name, data_dir=tmp_path)
  assert data.name == name
  assert data.num_classes == 10
  assert data.input_shape == shape
  for split in (data.train, data.test):
    assert split.x.shape == (6,) + shape and split.x.dtype == np.float32
    assert split.y.shape == (6,) and split.y.dtype == np.int64
    assert 0.0 <= split.x.min() and split.x.max() <= 1.0
    assert np.all((0 <= split.y) & (split.y < 10))


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
  with pytest.raises(datasets.DatasetNotPreparedError) as info:
    datasets.load_tfds("fashion_mnist", data_dir=tmp_path)
  message = str(info.value)
  assert "tfds build fashion_mnist" in message
  assert str(tmp_path) in message
  assert "TFDS_DATA_DIR" in message
  assert isinstance(info.value, RuntimeError)


def test_tfds_bad_name_lists_allowed_names():
  with pytest.raises(ValueError, match="name must be one of") as info:
    datasets.load_tfds("imagenet")
  for name in datasets.TFDS_DATASETS:
    assert repr(name) in str(info.value)


def test_write_npz_then_read_npz_round_trips_a_whole_image_set(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(7, 5, 5, 1)).astype(np.float32)
  labels = rng.integers(0, 3, 7)
  path = tmp_path / "synthetic.npz"
  datasets.write_npz(path, images, labels)
  whole = datasets.read_npz(path)
  assert whole.x.shape == (7, 5, 5, 1) and whole.x.dtype == np.float32
  np.testing.assert_allclose(whole.x, images, atol=0.5 / 255 + 1e-7)
  np.testing.assert_array_equal(whole.y, labels)


def test_write_npz_refuses_images_outside_the_unit_range(tmp_path):
  with pytest.raises(ValueError, match=r"images must hold float values"):
    datasets.write_npz(tmp_path / "bad.npz", np.full((2, 3, 3), 1.5),
                        np.zeros(2))
  with pytest.raises(ValueError, match="same length"):
    datasets.write_npz(tmp_path / "bad.npz", np.zeros((2, 3, 3)),
                        np.zeros(3))
  with pytest.raises(FileNotFoundError):
    datasets.read_npz(tmp_path / "missing.npz")


def test_fit_to_frame_centres_the_resized_image_on_black():
  images = np.random.default_rng(0).random((3, 8, 8, 1), np.float32)
  framed = datasets.fit_to_frame(images, side=28, box=20)
  assert framed.shape == (3, 28, 28, 1) and framed.dtype == np.float32
  border = np.ones((28, 28), bool)
  border[4:24, 4:24] = False
  assert np.all(framed[:, border] == 0)
  # A constant image stays constant inside the box.
  ones = datasets.fit_to_frame(np.ones((1, 8, 8, 1), np.float32))
  np.testing.assert_allclose(ones[0, 4:24, 4:24], 1.0, atol=1e-6)
  # The content is the image resized: its mean is kept (within 2%).
  np.testing.assert_allclose(framed[:, 4:24, 4:24].mean(axis=(1, 2, 3)),
                             images.mean(axis=(1, 2, 3)), rtol=0.02)
  with pytest.raises(ValueError, match="box must be at most"):
    datasets.fit_to_frame(images, side=10, box=12)
