"""Tests of tfdp.stobatch.budget against hand-computed values."""

import math

import numpy as np
import pytest

from tfdp.stobatch import budget


def test_first_layer_sensitivity_hand_values():
  # CIFAR-10 in the original: 3 * (14*14 + 2) * 16 (4x4 kernel).
  assert budget.first_layer_sensitivity(3, 4, 14) == 9504.0
  # MNIST: 1 channel, 5x5 kernel, 14x14 output: 1 * 198 * 25.
  assert budget.first_layer_sensitivity(1, 5, 14) == 4950.0
  assert budget.output_sensitivity(256) == 512.0


def test_budget_hand_values():
  b = budget.stobatch_budget(
      epsilon_ae=2.0, epsilon_out=0.5, batch_size=100, channels=3,
      kernel_size=4, output_size=14, sigma_max_w1=2.0, hidden_width=256)
  # gamma = 2 * 9504 / (100 * 2) = 95.04, gamma_x = 9504 / 100 = 95.04.
  assert b.delta2 == 9504.0
  assert b.gamma == pytest.approx(95.04)
  assert b.gamma_x == pytest.approx(95.04)
  # epsilon' = 2 / (1 + 2 / 95.04) = 190.08 / 97.04.
  assert b.epsilon_prime == pytest.approx(190.08 / 97.04)
  # input scale = 9504 / (100 epsilon') = 95.04 * 97.04 / 190.08 = 48.52.
  assert b.input_noise_scale == pytest.approx(48.52)
  assert b.hidden_noise_scale == pytest.approx(97.04)
  # output scale = 2 * 256 / (100 * 0.5) = 10.24.
  assert b.output_noise_scale == pytest.approx(10.24)
  assert b.epsilon == pytest.approx(2.5)
  # The split spends exactly epsilon_ae: eps'/gamma_x + eps' + eps'/gamma.
  spent = b.epsilon_prime * (1 + 1 / b.gamma + 1 / b.gamma_x)
  assert spent == pytest.approx(2.0)


def test_budget_is_conservative_in_sigma_max():
  kwargs = dict(epsilon_ae=1.0, epsilon_out=1.0, batch_size=50, channels=1,
                kernel_size=5, output_size=14, hidden_width=256)
  small = budget.stobatch_budget(sigma_max_w1=0.5, **kwargs)
  large = budget.stobatch_budget(sigma_max_w1=50.0, **kwargs)
  # A larger sigma_max(W1) gives a smaller gamma, a smaller epsilon' and
  # hence more noise.
  assert large.gamma < small.gamma
  assert large.input_noise_scale > small.input_noise_scale


def test_summary_states_assumptions():
  b = budget.stobatch_budget(
      epsilon_ae=1.0, epsilon_out=1.0, batch_size=10, channels=1,
      kernel_size=3, output_size=4, sigma_max_w1=1.0, hidden_width=8)
  text = b.summary()
  assert "pure DP" in text and "drawn once" in text
  assert "disjoint" in text and "augmentation" in text
  assert "epsilon = epsilon_ae + epsilon_out = 1 + 1 = 2" in text
  # The caveats come after the assumptions, each on its own line.
  caveats = text.split("Caveats (read before relying on epsilon):\n")[1]
  assert caveats.splitlines() == [f"  - {c}" for c in budget.CAVEATS]
  assert "noise-free part of the Taylor loss" in caveats
  assert "tfdp.make_private" in caveats


def test_kernel_sigma_max():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(4, 4, 3, 8))
  matrix = kernel.reshape(48, 8)
  expected = math.sqrt(np.linalg.eigvalsh(matrix.T @ matrix).max())
  assert budget.kernel_sigma_max(kernel) == pytest.approx(expected)
  with pytest.raises(ValueError, match="kernel must have rank 4"):
    budget.kernel_sigma_max(np.ones((3, 3)))


@pytest.mark.parametrize("override, message", [
    (dict(epsilon_ae=-1.0), "epsilon_ae must be a finite number > 0"),
    (dict(epsilon_out=0.0), "epsilon_out must be a finite number > 0"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(batch_size=2.5), "batch_size must be an integer >= 1"),
    (dict(channels=0), "channels must be an integer >= 1"),
    (dict(kernel_size=-3), "kernel_size must be an integer >= 1"),
    (dict(output_size=0), "output_size must be an integer >= 1"),
    (dict(sigma_max_w1=0.0), "sigma_max_w1 must be a finite number > 0"),
    (dict(sigma_max_w1=float("inf")), "sigma_max_w1 must be a finite"),
    (dict(hidden_width=0), "hidden_width must be an integer >= 1"),
])
def test_budget_validation(override, message):
  kwargs = dict(epsilon_ae=1.0, epsilon_out=1.0, batch_size=10, channels=1,
                kernel_size=3, output_size=4, sigma_max_w1=1.0,
                hidden_width=8)
  kwargs.update(override)
  with pytest.raises(ValueError, match=message):
    budget.stobatch_budget(**kwargs)
