"""tf.keras is Keras 2 under tfdp on every supported TensorFlow (2.15-2.21)."""

import os
import pathlib
import subprocess
import sys

import pytest

from tfdp import _keras2

ROOT = pathlib.Path(__file__).resolve().parents[1]
NEWER_TENSORFLOW = (_keras2.installed_tensorflow() or (0, 0)) >= (2, 16)
# Keras 3 has keras.ops; Keras 2 (built in, or tf-keras) has not.
_REPORT = ("import os, tensorflow as tf; "
           "print(hasattr(tf.keras, 'ops'), "
           "os.environ.get('TF_USE_LEGACY_KERAS'))")


def _python(code, **env):
  environment = {k: v for k, v in os.environ.items()
                 if k != "TF_USE_LEGACY_KERAS"}
  environment.update(env)
  return subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=environment, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("first", ["import tfdp", "import tensorflow"])
def test_importing_tfdp_gives_keras_2(first):
  """Also when TensorFlow was imported first, if tf.keras was not used."""
  result = _python(f"{first}; import tfdp; {_REPORT}")
  assert result.returncode == 0, result.stderr[-3000:]
  has_ops, setting = result.stdout.split()
  assert has_ops == "False"
  # TensorFlow 2.15's tf.keras is Keras 2 already: nothing is set there.
  assert setting == ("1" if NEWER_TENSORFLOW else "None")


@pytest.mark.skipif(not NEWER_TENSORFLOW,
                    reason="TensorFlow 2.15's tf.keras is always Keras 2")
@pytest.mark.parametrize("code,env,why", [
    ("import tensorflow as tf; tf.keras.layers; import tfdp", {},
     ""),
    ("import tfdp", {"TF_USE_LEGACY_KERAS": "0"},
     "(TF_USE_LEGACY_KERAS is '0')"),
], ids=["keras-3-already-in-use", "user-chose-keras-3"])
def test_keras_3_is_refused_with_the_fix(code, env, why):
  result = _python(code, **env)
  assert result.returncode == 1
  (error,) = [line for line in result.stderr.splitlines()
              if line.startswith("ImportError: ")]
  assert "tfdp needs the Keras 2 API as tf.keras" in error
  assert why in error
  assert "pip install 'tf-keras~=" in error
  assert "export TF_USE_LEGACY_KERAS=1" in error
