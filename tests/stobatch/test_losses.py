"""Tests of the Taylor cross-entropy and its functional-mechanism version."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests import noise_stats
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


def _numpy_coefficients(loss, y, h, weights=None, draws=None):
  """(lambda1 + chi1~, symmetric noisy lambda2 + chi2~, P): float64 numpy.

  chi~ = sum_d v_d chi[d] with v_d the weight of the examples of batch d
  (all on draw 0 without `draws`). P = Q diag(max(c - mu, 0)) Q^T for the
  symmetric noisy coefficient Q diag(mu) Q^T, computed independently of the
  library.
  """
  m = h.shape[0]
  w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights)
  hp = np.concatenate([h, np.ones((m, 1))], axis=1)
  lam1 = hp.T @ ((0.5 - y) * w[:, None])
  lam2 = (hp * w[:, None]).T @ hp
  draws = np.zeros(m, int) if draws is None else np.asarray(draws)
  v = [w[draws == d].sum() for d in range(loss.num_draws)]
  chi1 = sum(vd * c for vd, c in zip(v, loss.chi1.numpy().astype(np.float64)))
  chi2 = sum(vd * c for vd, c in zip(v, loss.chi2.numpy().astype(np.float64)))
  noisy = lam2 + (chi2 + chi2.T) / 2
  mu, q = np.linalg.eigh(noisy)
  floor = (q * np.maximum(loss.min_curvature - mu, 0.0)) @ q.T
  return lam1 + chi1, noisy, floor


def _numpy_polynomial(loss, y, h, w, b, weights=None, draws=None):
  """K ln 2 + sum W'(lambda1 + chi1~) + 1/8 sum_k W'_k^T (M + P) W'_k."""
  linear, noisy, floor = _numpy_coefficients(loss, y, h, weights, draws)
  wp = np.concatenate([w, b[None, :]], axis=0)
  return (y.shape[1] * math.log(2) + np.sum(wp * linear)
          + np.sum(wp * ((noisy + floor) @ wp)) / 8)


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
  # This draw makes the noisy form indefinite: the floor is at work.
  _, noisy, floor = _numpy_coefficients(loss, y, h)
  assert np.linalg.eigvalsh(noisy)[0] < 0 and np.abs(floor).max() > 0.1
  # Noise-free part equals the mean Taylor loss.
  exact = float(tf.reduce_mean(losses.taylor_cross_entropy(y, h @ w + b)))
  wp = np.concatenate([w, b[None, :]], axis=0)
  assert got - float(loss.noise_term(w, b)) - np.sum(
      wp * (floor @ wp)) / 8 == pytest.approx(exact, rel=1e-5)


def test_example_weights_give_the_benign_adversarial_combination():
  rng = np.random.default_rng(2)
  m, e, k, alpha = 8, 5, 3, 1.5
  loss = losses.NoisyTaylorLoss(e, k, m, 1.0, seed=4)
  h = rng.uniform(-1, 1, size=(2 * m, e))
  y = np.eye(k)[rng.integers(0, k, size=2 * m)]
  w, b = rng.normal(size=(e, k)) * 0.3, rng.normal(size=k) * 0.1
  weights = np.r_[np.full(m, 1 / ((1 + alpha) * m)),
                  np.full(m, alpha / ((1 + alpha) * m))]
  got = float(loss(y, h, w, b, example_weights=weights))
  assert got == pytest.approx(
      _numpy_polynomial(loss, y, h, w, b, weights), rel=1e-5)
  # The noise-free parts combine as (L_benign + alpha L_adv) / (1 + alpha).
  wp = np.concatenate([w, b[None, :]], axis=0)
  _, _, floor = _numpy_coefficients(loss, y, h, weights)
  taylor = losses.taylor_cross_entropy(y, h @ w + b).numpy()
  combined = float(losses.combine_benign_adversarial(
      taylor[:m].mean(), taylor[m:].mean(), alpha))
  assert got - float(loss.noise_term(w, b)) - np.sum(
      wp * (floor @ wp)) / 8 == pytest.approx(combined, rel=1e-5)


@pytest.mark.parametrize("min_curvature", [0.1, 1.0])
def test_floored_form_has_the_least_curvature_and_is_bounded_below(
    min_curvature):
  # Heavy noise (b3 = 2 E / (m eps) = 3.75): the raw noisy form is
  # indefinite, so the raw loss has no minimum.
  rng = np.random.default_rng(3)
  m, e, k = 16, 15, 3
  loss = losses.NoisyTaylorLoss(e, k, m, 0.5, min_curvature=min_curvature,
                                seed=5)
  h = rng.uniform(-1, 1, size=(m, e)).astype(np.float32)
  y = np.eye(k, dtype=np.float32)[rng.integers(0, k, size=m)]
  linear, noisy, floor = _numpy_coefficients(loss, y, h)
  assert np.linalg.eigvalsh(noisy)[0] < -1.0
  curvature = noisy + floor
  assert np.linalg.eigvalsh(curvature)[0] >= min_curvature - 1e-4
  # Exact minimum of K ln 2 + sum_k [W'_k . l_k + 1/8 W'_k^T A W'_k]:
  # W'_k = -4 A^-1 l_k, value K ln 2 - 2 sum_k l_k^T A^-1 l_k.
  lowest = k * math.log(2) - 2 * np.sum(linear * np.linalg.solve(curvature,
                                                                  linear))
  # The library's loss attains it at W'* with zero gradient ...
  best = -4 * np.linalg.solve(curvature, linear)
  w = tf.Variable(best[:-1].astype(np.float32))
  b = tf.Variable(best[-1].astype(np.float32))
  with tf.GradientTape() as tape:
    value = loss(y, h, w, b)
  assert float(value) == pytest.approx(lowest, rel=1e-4)
  gradient = np.concatenate([g.numpy().reshape(-1)
                             for g in tape.gradient(value, [w, b])])
  assert np.max(np.abs(gradient)) < 1e-3 * np.max(np.abs(linear))
  # ... and gradient descent from 0 never goes below it, while the same
  # descent on the raw noisy loss runs away below it.
  w.assign(tf.zeros_like(w))
  b.assign(tf.zeros_like(b))
  raw_w = tf.Variable(tf.zeros([e, k]))
  raw_b = tf.Variable(tf.zeros([k]))
  optimizer = tf.keras.optimizers.SGD(2.0 / np.linalg.eigvalsh(curvature)[-1])
  raw_optimizer = tf.keras.optimizers.SGD(0.05)

  @tf.function
  def steps():
    for _ in tf.range(60):
      with tf.GradientTape(persistent=True) as tape:
        value = loss(y, h, w, b)
        raw = (tf.reduce_mean(losses.taylor_cross_entropy(y, h @ raw_w
                                                          + raw_b))
               + loss.noise_term(raw_w, raw_b))
      optimizer.apply_gradients(zip(tape.gradient(value, [w, b]), [w, b]))
      raw_optimizer.apply_gradients(zip(tape.gradient(raw, [raw_w, raw_b]),
                                        [raw_w, raw_b]))
    return loss(y, h, w, b), raw

  value, raw = (float(v) for v in steps())
  assert lowest - 1e-4 * abs(lowest) <= value < k * math.log(2)
  assert raw < lowest


def test_noisy_taylor_loss_noise_scale_and_fixed_draw():
  e, k, m, eps = 200, 10, 50, 0.5
  loss = losses.NoisyTaylorLoss(hidden_width=e, num_classes=k, batch_size=m,
                                epsilon_out=eps)
  scale = 2 * e / (m * eps)  # Delta3 / (m epsilon_out) = 16.
  assert loss.scale == pytest.approx(16.0)
  assert loss.chi1.shape == (1, e + 1, k)
  assert loss.chi2.shape == (1, e + 1, e + 1)
  for chi in (loss.chi1.numpy(), loss.chi2.numpy()):
    n = chi.size
    # |Lap(b)| ~ Exp(b): mean b, stddev b. Secret draws: Z standard errors.
    z = noise_stats.Z
    assert abs(np.mean(np.abs(chi)) - scale) < z * scale / math.sqrt(n)
    assert abs(np.mean(chi)) < z * math.sqrt(2) * scale / math.sqrt(n)
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
  assert loss.chi1.shape == (1, 3, 2)
  with pytest.raises(ValueError, match="epsilon_out must be a finite number"):
    losses.NoisyTaylorLoss(3, 2, 4, -1.0)
  with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
    losses.NoisyTaylorLoss(3, 2, 0, 1.0)
  with pytest.raises(ValueError, match="hidden_width must be an integer"):
    losses.NoisyTaylorLoss(0, 2, 4, 1.0)
  with pytest.raises(ValueError, match="bias is required"):
    losses.NoisyTaylorLoss(3, 2, 4, 1.0)(np.eye(2)[[0]], np.ones((1, 3)),
                                         np.ones((3, 2)))
  with pytest.raises(ValueError, match="min_curvature must be a finite"):
    losses.NoisyTaylorLoss(3, 2, 4, 1.0, min_curvature=-0.1)


def test_each_fixed_batch_brings_its_own_noise_draw():
  # Two fixed batches in one loss (e.g. benign and adversarial): batch d's
  # draw enters with the weight of batch d's data, v_d.
  rng = np.random.default_rng(4)
  e, k, m = 5, 3, 4
  loss = losses.NoisyTaylorLoss(e, k, m, 2.0, num_draws=3, seed=1)
  assert loss.chi1.shape == (3, e + 1, k)
  chi1 = loss.chi1.numpy()
  assert not np.allclose(chi1[0], chi1[1])  # independent draws
  y = np.eye(k)[rng.integers(0, k, 2 * m)]
  h = rng.uniform(-1, 1, (2 * m, e))
  w, b = rng.normal(size=(e, k)), rng.normal(size=k)
  weights = np.concatenate([np.full(m, 0.4 / m), np.full(m, 0.6 / m)])
  draws = np.array([2] * m + [0] * m)
  got = float(loss(y, h, w, b, example_weights=weights, draws=draws))
  assert got == pytest.approx(
      _numpy_polynomial(loss, y, h, w, b, weights, draws), rel=1e-5)
  with pytest.raises(ValueError, match="one per\n?.*fixed batch"):
    loss(y, h, w, b, example_weights=weights)
