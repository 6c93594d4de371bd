"""Tests of the Heterogeneous Gaussian Mechanism (tfdp.stobatch.securesgd)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import noise_stats
from tfdp.stobatch import securesgd


def test_hgm_sigma_hand_values():
  # delta = 1e-5: s = ln(sqrt(2/pi)) + 5 ln 10 = -0.2257913526 + 11.5129254650.
  s = 11.2871341124
  expected = math.sqrt(2) * (math.sqrt(s) + math.sqrt(s + 1.0)) / 2.0
  assert expected == pytest.approx(4.8542413, abs=1e-6)
  assert securesgd.hgm_sigma(1.0, 1.0, 1e-5) == pytest.approx(expected,
                                                              rel=1e-9)
  # Linear in Delta; epsilon = 0.5, delta = 1e-3: s = 6.68196...
  s = math.log(math.sqrt(2 / math.pi)) + 3 * math.log(10)
  assert s == pytest.approx(6.681964, abs=1e-6)
  assert securesgd.hgm_sigma(3.0, 0.5, 1e-3) == pytest.approx(
      3 * math.sqrt(2) * (math.sqrt(s) + math.sqrt(s + 0.5)) / 1.0)


def test_hgm_sigma_monotone():
  eps = [0.1, 0.5, 1.0, 2.0, 8.0]
  sig = [securesgd.hgm_sigma(1.0, e, 1e-5) for e in eps]
  assert all(a > b for a, b in zip(sig, sig[1:]))
  deltas = [1e-9, 1e-6, 1e-3, 0.1, 0.5]
  sig = [securesgd.hgm_sigma(1.0, 1.0, d) for d in deltas]
  assert all(a > b for a, b in zip(sig, sig[1:]))


@pytest.mark.parametrize("args, message", [
    ((0.0, 1.0, 1e-5), "sensitivity must be a finite number > 0"),
    ((1.0, -1.0, 1e-5), "epsilon must be a finite number > 0"),
    ((1.0, 1.0, 0.0), r"delta must be in the open interval \(0, sqrt\(2/pi\)"),
    ((1.0, 1.0, 0.8), r"delta must be in the open interval \(0, sqrt\(2/pi\)"),
])
def test_hgm_validation(args, message):
  with pytest.raises(ValueError, match=message):
    securesgd.hgm_sigma(*args)


def test_hgm_noise_layer_fresh_gaussian():
  layer = securesgd.HGMNoise(sensitivity=0.5, epsilon=1.0, delta=1e-5)
  assert layer.stddev == pytest.approx(0.5 * 4.8542413, rel=1e-6)
  x = tf.zeros([40, 500])
  a = layer(x, training=True).numpy()
  b = layer(x, training=True).numpy()
  assert not np.allclose(a, b)  # fresh at every call
  n = a.size
  # std estimate: relative standard error of the sample std ~ 1/sqrt(2n).
  # Secret noise: Z standard errors, a false failure below 1e-7 each.
  assert abs(a.std() / layer.stddev - 1) < noise_stats.Z / math.sqrt(2 * n)
  assert abs(a.mean()) < noise_stats.Z * layer.stddev / math.sqrt(n)
  quiet = securesgd.HGMNoise(0.5, 1.0, 1e-5, apply_at_inference=False)
  assert np.array_equal(quiet(x).numpy(), x.numpy())
  clone = securesgd.HGMNoise.from_config(layer.get_config())
  assert clone.stddev == layer.stddev
