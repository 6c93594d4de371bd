"""Run as a script: experiments._data's offline MNIST fallback and public
slice. Prints one JSON line.

experiments._data defines the shared data flags (--dataset, ...), which
flags/stobatch.py also defines, so this runs in a process of its own.
"""

import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from experiments import _data
import tfdp
# pylint: enable=g-import-not-at-top,wrong-import-position


def _not_prepared(*args, **kwargs):
  raise tfdp.data.DatasetNotPreparedError("not prepared")


def main():
  flags.FLAGS(["check", "--dataset=mnist"])
  tfdp.data.load_tfds = _not_prepared
  warnings = []
  _data.logging.warning = lambda message, *a: warnings.append(message % a)
  results = {}
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "mnist_test.npz")
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
             y=np.arange(50) % 10)
    _data.OFFLINE_MNIST = path
    dataset = _data.load_dataset()
    results["fallback"] = {"name": dataset.name, "train": len(dataset.train),
                           "test": len(dataset.test), "warnings": warnings}
    _data.OFFLINE_MNIST = os.path.join(directory, "absent.npz")
    try:
      _data.load_dataset()
      results["absent"] = "loaded"
    except tfdp.data.DatasetNotPreparedError:
      results["absent"] = "DatasetNotPreparedError"

  x = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
  train = tfdp.data.Split(x, np.arange(20) % 2)
  public, private = _data.public_slice(train, 5)
  again, _ = _data.public_slice(train, 5)
  results["slice"] = {
      "repeatable": bool(np.array_equal(public, again)),
      "sizes": [len(public), len(private)],
      "union": sorted(np.concatenate([public, private.x]).ravel().tolist())}
  try:
    _data.public_slice(train, 20)
  except app.UsageError as error:
    results["too_many"] = str(error)
  print(json.dumps(results))


if __name__ == "__main__":
  main()
