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


@pytest.mark.parametrize("kwargs, expected", [
    # CIFAR-10's first layer in the original: Delta2 = 9504; m = 100 and
    # sigma_max(W1) = 2 give gamma = 2 * 9504 / (100 * 2) = 95.04 = gamma_x
    # = 9504 / 100; epsilon' = 2 / (1 + 2 / 95.04) = 190.08 / 97.04; input
    # scale 9504 / (100 epsilon') = 48.52; output 2 * 256 / (100 * 0.5).
    (dict(epsilon_ae=2.0, epsilon_out=0.5, batch_size=100, channels=3,
          kernel_size=4, output_size=14, sigma_max_w1=2.0, hidden_width=256),
     dict(delta2=9504.0, gamma=95.04, gamma_x=95.04,
          epsilon_prime=190.08 / 97.04, input_noise_scale=48.52,
          hidden_noise_scale=97.04, output_noise_scale=10.24, epsilon=2.5)),
    # MNIST's: Delta2 = 1 * (14^2 + 2) * 25 = 4950; m = 50 and sigma_max = 1
    # give gamma = 2 * 4950 / 50 = 198 and gamma_x = 4950 / 50 = 99 (so
    # swapping the two formulas shows); epsilon' = 1 / (1 + 1/198 + 1/99) =
    # 198 / 201; input scale 99 * 201 / 198 = 100.5, hidden twice it; output
    # Delta3 = 2 * 100 = 200 over 50 * 2.
    (dict(epsilon_ae=1.0, epsilon_out=2.0, batch_size=50, channels=1,
          kernel_size=5, output_size=14, sigma_max_w1=1.0, hidden_width=100),
     dict(delta2=4950.0, gamma=198.0, gamma_x=99.0, epsilon_prime=198 / 201,
          input_noise_scale=100.5, hidden_noise_scale=201.0,
          output_noise_scale=2.0, epsilon=3.0)),
], ids=["cifar10_equal_gammas", "mnist_gamma_twice_gamma_x"])
def test_budget_hand_values(kwargs, expected):
  b = budget.stobatch_budget(**kwargs)
  for name, value in expected.items():
    assert getattr(b, name) == pytest.approx(value), name
  # The split spends exactly epsilon_ae: eps'/gamma_x + eps' + eps'/gamma.
  spent = b.epsilon_prime * (1 + 1 / b.gamma + 1 / b.gamma_x)
  assert spent == pytest.approx(kwargs["epsilon_ae"])


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


def test_model_builder_wires_the_budget_into_layers_and_trainer():
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tfdp.stobatch import models
  from tfdp.stobatch import trainer as trainer_lib
  # pylint: enable=g-import-not-at-top
  model, b = models.build_stobatch_model(
      "mnist", num_classes=10, epsilon_ae=1.5, epsilon_out=0.5,
      batch_size=40, side=12, seed=3)
  # The budget recomputed independently from the layer's own W1: 1 channel,
  # 5x5 kernel, 6x6 output (stride 2 on 12x12), 256 hidden units.
  kernel = model.autoencoder.kernel.numpy()
  assert kernel.shape[:3] == (5, 5, 1)
  expected = budget.stobatch_budget(
      epsilon_ae=1.5, epsilon_out=0.5, batch_size=40, channels=1,
      kernel_size=5, output_size=6,
      sigma_max_w1=budget.kernel_sigma_max(kernel), hidden_width=256)
  assert b == expected and model.budget is b
  autoencoder = model.autoencoder
  assert autoencoder.input_noise_scale == expected.input_noise_scale
  assert autoencoder.hidden_noise_scale == expected.hidden_noise_scale
  assert autoencoder.input_noise.scale == expected.input_noise_scale
  assert autoencoder.hidden_noise.scale == expected.hidden_noise_scale
  trainer = trainer_lib.StoBatchTrainer(model, tf.distribute.get_strategy())
  assert trainer.taylor_loss.batch_size == 40
  assert trainer.taylor_loss.scale == pytest.approx(
      expected.output_noise_scale)
  rng = np.random.default_rng(0)
  other_size = trainer_lib.FixedBatches(
      rng.uniform(-1, 1, (100, 12, 12, 1)).astype(np.float32),
      rng.integers(0, 10, 100), batch_size=20)
  with pytest.raises(ValueError, match="budget's m"):
    trainer.fit(other_size, 1)
