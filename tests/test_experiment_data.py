"""experiments._data: the offline MNIST fallback and the public slice."""

import pathlib

from tests import scripts

CHECK = pathlib.Path(__file__).resolve().parent / "experiment_data_check.py"


def test_offline_mnist_fallback_and_public_slice():
  results = scripts.run_json_script(CHECK, timeout=300)
  fallback = results["fallback"]
  assert (fallback["name"], fallback["train"], fallback["test"]) == (
      "mnist", 40, 10)
  assert "reading the 10,000-image MNIST test set" in fallback["warnings"][0]
  # Without the file, TFDS's own error stands.
  assert results["absent"] == "DatasetNotPreparedError"
  # A fixed, disjoint slice; the rest stays private.
  assert results["slice"]["repeatable"]
  assert results["slice"]["sizes"] == [5, 15]
  assert results["slice"]["union"] == list(range(20))
  assert "cannot set 20" in results["too_many"]
