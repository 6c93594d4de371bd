"""Broken DP-SGD variants the audit must catch (negative controls).

Each is a context manager that patches tfdp's internals while a model is
built and traced, so the trainer runs with the fault while its accounting
still claims the configured noise. They exist to test the audit; tfdp
offers no such option.

* `no_noise`: the noise multiplier silently 0.
* `no_clipping`: every clip factor 1 (per-example gradients unbounded).
* `replica_noise(scale)`: every replica adds its own noise, scaled by
  `scale` (e.g. 1 / B, the scale of the average's noise, added to the sum)
  instead of one replica adding sigma C.
"""

import contextlib
from typing import Callable, Dict, Iterator
from unittest import mock

import tensorflow as tf

from tfdp import optimizers
from tfdp.clipping import engine
from tfdp.privacy import mechanisms


@contextlib.contextmanager
def no_noise() -> Iterator[None]:
  original = mechanisms.gaussian_noise

  def silent(*args, **kwargs):
    return 0.0 * original(*args, **kwargs)

  with mock.patch.object(mechanisms, "gaussian_noise", silent):
    yield


@contextlib.contextmanager
def no_clipping() -> Iterator[None]:
  with mock.patch.object(engine, "clip_factors",
                         lambda norms, clip: tf.ones_like(norms)):
    yield


@contextlib.contextmanager
def replica_noise(scale: float) -> Iterator[None]:
  with mock.patch.object(optimizers, "_first_replica_indicator",
                         lambda: tf.constant(float(scale))):
    yield


@contextlib.contextmanager
def none() -> Iterator[None]:
  yield


FAULTS: Dict[str, Callable[..., contextlib.AbstractContextManager]] = {
    "none": none, "no_noise": no_noise, "no_clipping": no_clipping,
    "replica_noise": replica_noise}
