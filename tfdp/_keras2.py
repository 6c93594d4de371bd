"""Keras 2 as `tf.keras` on every supported TensorFlow (2.15 to 2.21).

tfdp is written against the Keras 2 API (`tf.keras` of TensorFlow 2.15).
From TensorFlow 2.16 on, `tf.keras` is Keras 3 unless the tf-keras package
is installed and the environment variable TF_USE_LEGACY_KERAS=1 is set
before `tf.keras` is first used; TensorFlow reads it then, once per process.
`use_keras_2` sets it (unless the user chose otherwise) and checks the
result, so that a user meets one clear error here instead of Keras 3 errors
from inside tfdp. On TensorFlow 2.15, `tf.keras` is Keras 2 already and
nothing is set.
"""

import importlib.metadata
import importlib.util
import os
from typing import Optional, Tuple

_LEGACY_KERAS = "TF_USE_LEGACY_KERAS"
_TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel",
                             "tensorflow-macos", "tf-nightly")


def installed_tensorflow() -> Optional[Tuple[int, int]]:
  """(major, minor) of the installed TensorFlow, read without importing it."""
  for distribution in _TENSORFLOW_DISTRIBUTIONS:
    try:
      version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
      continue
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
  return None


def _fix(version: str) -> str:
  minor = ".".join(version.split(".")[:2])
  return (f"install tf-keras {minor} (pip install 'tf-keras~={minor}.0') and "
          f"set {_LEGACY_KERAS}=1 before TensorFlow is imported (export "
          f"{_LEGACY_KERAS}=1 in the shell, or os.environ['{_LEGACY_KERAS}'] "
          "= '1' at the top of the script, or import tfdp before anything "
          "uses tf.keras)")


def use_keras_2() -> None:
  """Makes `tf.keras` Keras 2 (tf-keras on TensorFlow >= 2.16), or refuses.

  Call before TensorFlow is imported where possible; if it was imported
  already, it still works as long as nothing has used `tf.keras` yet.

  Raises:
    ImportError: when `tf.keras` is or would be Keras 3, with the one line
      that fixes it.
  """
  version = installed_tensorflow()
  if version is not None and version >= (2, 16):
    os.environ.setdefault(_LEGACY_KERAS, "1")
    if importlib.util.find_spec("tf_keras") is None:
      raise ImportError(
          f"tfdp needs the Keras 2 API, which TensorFlow "
          f"{version[0]}.{version[1]} provides through the tf-keras package, "
          f"not installed here: {_fix('.'.join(map(str, version)))}.")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Using tf.keras makes TensorFlow >= 2.16's lazy loader pick a Keras (and
  # put the module in its place). Keras 3 has `ops`; Keras 2 has not.
  if hasattr(tf.keras, "ops"):
    setting = os.environ.get(_LEGACY_KERAS)
    if setting in ("true", "True", "1"):
      already = " (tf.keras was already in use when tfdp was imported)"
    else:
      already = f" ({_LEGACY_KERAS} is {setting!r})" if setting else ""
    raise ImportError(
        f"tfdp needs the Keras 2 API as tf.keras, but TensorFlow "
        f"{tf.__version__} gives Keras 3{already}: "
        f"{_fix(tf.__version__)}.")
