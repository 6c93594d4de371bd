"""Tests of the Taylor cross-entropy and its functional-mechanism version."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdp.stobatch import losses


def test_taylor_close_to_exact_cross_entropy_near_zero():
  z = np.linspace(-0.6, 0.6, 41).reshape(-1, 1)
  for y in (0.0, 1.0):
    labels = np.full_like(z, y)
    taylor = losses.taylor_cross_entropy(labels, z).numpy()
    exact = tf.nn.sigmoid_cross_entropy_with_logits(labels, z).numpy()[:, 0]
    err = exact - taylor
    # log(1 + e^-|z|) = ln 2 - |z|/2 + z^2/8 - z^4/192 + z^6/2880 - ...
    z4 = z[:, 0] ** 4
    np.testing.assert_allclose(err, -z4 / 192, atol=float(np.max(
        z[:, 0] ** 6)) / 2880 + 1e-12)
    assert np.all(np.abs(err) <= z4 / 192 + 1e-15)


def test_taylor_is_the_polynomial_everywhere():
  z = np.array([[-3.0, 0.0, 2.5, 7.0]])
  y = np.array([[1.0, 0.0, 0.0, 1.0]])
  expected = np.sum(math.log(2) + z * (0.5 - y) + z ** 2 / 8)
  assert losses.taylor_cross_entropy(y, z).numpy()[0] == pytest.approx(
      expected)
  # By hand for z = -3, y = 1: 0 + 3 + ln 2 - 1.5 + 9/8.
  assert losses.taylor_cross_entropy([[1.0]], [[-3.0]]).numpy()[0] == (
      pytest.approx(3 + math.log(2) - 1.5 + 9 / 8))


def test_combine_benign_adversarial():
  assert float(losses.combine_benign_adversarial(1.0, 3.0)) == pytest.approx(
      (1 + 1.5 * 3) / 2.5)
  assert float(losses.combine_benign_adversarial(1.0, 3.0, alpha=0.0)) == 1.0
  with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
    losses.combine_benign_adversarial(1.0, 3.0, alpha=-0.5)


def _numpy_polynomial(loss, y, h, w, b):
  """K ln 2 + sum W'(lambda1 + chi1) + 1/8 sum_k W'_k^T (lambda2 + chi2) W'_k."""
  m = h.shape[0]
  hp = np.concatenate([h, np.ones((m, 1))], axis=1)
  wp = np.concatenate([w, b[None, :]], axis=0)
  lam1 = hp.T @ (0.5 - y) / m
  lam2 = hp.T @ hp / m
  chi1 = loss.chi1.numpy().astype(np.float64)
  chi2 = loss.chi2.numpy().astype(np.float64)
  return (y.shape[1] * math.log(2) + np.sum(wp * (lam1 + chi1))
          + np.sum(wp * ((lam2 + chi2) @ wp)) / 8)


def test_noisy_taylor_loss_is_the_noisy_polynomial():
  rng = np.random.default_rng(1)
  m, e, k = 16, 6, 4
  loss = losses.NoisyTaylorLoss(hidden_width=e, num_classes=k, batch_size=m,
                                epsilon_out=2.0, seed=3)
  h = rng.uniform(-1, 1, size=(m, e))
  y = np.eye(k)[rng.integers(0, k, size=m)]
  w = rng.normal(size=(e, k)) * 0.3
  b = rng.normal(size=k) * 0.1
  got = float(loss(y, h, w, b))
  assert got == pytest.approx(_numpy_polynomial(loss, y, h, w, b), rel=1e-5)
  # Noise-free part equals the mean Taylor loss.
  exact = float(tf.reduce_mean(losses.taylor_cross_entropy(y, h @ w + b)))
  assert got - float(loss.noise_term(w, b)) == pytest.approx(exact, rel=1e-5)


def test_noisy_taylor_loss_noise_scale_and_fixed_draw():
  e, k, m, eps = 200, 10, 50, 0.5
  loss = losses.NoisyTaylorLoss(hidden_width=e, num_classes=k, batch_size=m,
                                epsilon_out=eps)
  scale = 2 * e / (m * eps)  # Delta3 / (m epsilon_out) = 16.
  assert loss.scale == pytest.approx(16.0)
  assert loss.chi1.shape == (e + 1, k) and loss.chi2.shape == (e + 1, e + 1)
  for chi in (loss.chi1.numpy(), loss.chi2.numpy()):
    n = chi.size
    # |Lap(b)| ~ Exp(b): mean b, stddev b.
    assert abs(np.mean(np.abs(chi)) - scale) < 5 * scale / math.sqrt(n)
    assert abs(np.mean(chi)) < 5 * math.sqrt(2) * scale / math.sqrt(n)
  rng = np.random.default_rng(0)
  args = (np.eye(k)[rng.integers(0, k, 8)], rng.uniform(-1, 1, (8, e)),
          rng.normal(size=(e, k)), np.zeros(k))
  first = float(loss(*args))
  assert float(loss(*args)) == first  # the same draw at every call
  loss.redraw()
  assert float(loss(*args)) != first
  same = [losses.NoisyTaylorLoss(4, 3, 8, 1.0, seed=7).chi1.numpy()
          for _ in range(2)]
  np.testing.assert_array_equal(*same)


def test_noisy_taylor_loss_without_bias_and_validation():
  loss = losses.NoisyTaylorLoss(3, 2, 4, 1.0, use_bias=False, seed=0)
  assert loss.chi1.shape == (3, 2)
  with pytest.raises(ValueError, match="epsilon_out must be a finite number"):
    losses.NoisyTaylorLoss(3, 2, 4, -1.0)
  with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
    losses.NoisyTaylorLoss(3, 2, 0, 1.0)
  with pytest.raises(ValueError, match="hidden_width must be an integer"):
    losses.NoisyTaylorLoss(0, 2, 4, 1.0)
  with pytest.raises(ValueError, match="bias is required"):
    losses.NoisyTaylorLoss(3, 2, 4, 1.0)(np.eye(2)[[0]], np.ones((1, 3)),
                                         np.ones((3, 2)))
