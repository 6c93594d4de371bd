"""experiments._data: the offline MNIST fallback and the public slice."""

import numpy as np
import pytest
from absl import app
from absl import flags

from experiments import _data
from flags import data as data_flags
import tfdp


@pytest.fixture(name="parsed_flags")
def _parsed_flags():
  flags.FLAGS(["test", "--dataset=mnist"])
  yield flags.FLAGS
  flags.FLAGS.unparse_flags()


def _not_prepared(*args, **kwargs):
  raise tfdp.data.DatasetNotPreparedError("not prepared")


def test_mnist_falls_back_to_the_offline_file_with_a_warning(
    parsed_flags, tmp_path, monkeypatch):
  del parsed_flags
  path = tmp_path / "mnist_test.npz"
  rng = np.random.default_rng(0)
  np.savez(path, x=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
           y=np.arange(50) % 10)
  monkeypatch.setattr(tfdp.data, "load_tfds", _not_prepared)
  monkeypatch.setattr(_data, "OFFLINE_MNIST", str(path))
  warnings = []
  monkeypatch.setattr(_data.logging, "warning",
                      lambda message, *args: warnings.append(message % args))
  dataset = _data.load_dataset()
  assert dataset.name == "mnist"
  assert len(dataset.train) == 40 and len(dataset.test) == 10
  assert "reading the 10,000-image MNIST test set" in warnings[0]


def test_without_the_offline_file_the_tfds_error_stands(
    parsed_flags, tmp_path, monkeypatch):
  del parsed_flags
  monkeypatch.setattr(tfdp.data, "load_tfds", _not_prepared)
  monkeypatch.setattr(_data, "OFFLINE_MNIST", str(tmp_path / "absent.npz"))
  with pytest.raises(tfdp.data.DatasetNotPreparedError):
    _data.load_dataset()


def test_public_slice_sets_aside_a_fixed_disjoint_slice(parsed_flags):
  del parsed_flags
  x = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
  train = tfdp.data.Split(x, np.arange(20) % 2)
  public, private = _data.public_slice(train, 5)
  again, _ = _data.public_slice(train, 5)
  np.testing.assert_array_equal(public, again)
  assert len(public) == 5 and len(private) == 15
  assert sorted(np.concatenate([public, private.x]).ravel()) == list(range(20))
  with pytest.raises(app.UsageError, match="cannot set 20"):
    _data.public_slice(train, 20)
  assert data_flags.SPLIT_SEED.value == 0
