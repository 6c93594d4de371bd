"""StoBatch trainer: data-parallel equivalence, learning, batching, resume."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tfdp import data
from tfdp.stobatch import evaluation
from tfdp.stobatch import losses
from tfdp.stobatch import models
from tfdp.stobatch import trainer as trainer_lib

from tests import scripts

SCRIPT = pathlib.Path(__file__).with_name("trainer_replicas_check.py")


def test_four_replicas_and_one_give_the_same_gradients():
  out = scripts.run_json_script(SCRIPT, timeout=240)
  assert out["replicas"] == 4
  assert out["count"] >= 8  # W1, b1, conv2, GroupNorms, fc1, head.
  # Largest relative difference over the variables: float32 sums in a
  # different order (~1e-6); another batch moves every gradient by more.
  assert out["error"] <= 1e-4
  assert out["moved"] > 1e-3


def _trainer(batch_size, config, epsilon=1e5):
  # One noise draw per fixed batch of the 1,437 digits.
  model, _ = models.build_stobatch_model(
      "mnist", num_classes=10, epsilon_ae=epsilon, epsilon_out=epsilon,
      batch_size=batch_size, seed=0, noise_seed=1,
      num_batches=1437 // batch_size)
  return trainer_lib.StoBatchTrainer(model, tf.distribute.get_strategy(),
                                     config)


def _digits():
  ds = data.load_digits()
  return models.to_architecture_input(ds.train.x, "mnist"), ds.train.y


def _taylor(model, x, y):
  logits = model(x, training=False)  # Draw 0 of the fixed noise.
  return float(tf.reduce_mean(losses.taylor_cross_entropy(
      tf.one_hot(y, 10), logits)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny model trained 12 steps on digits (large epsilons: little noise).

  This checks the mechanics of the step, not the privacy-utility trade-off.
  """
  x, y = _digits()
  config = trainer_lib.TrainerConfig(learning_rate=3e-3, attack_steps=1,
                                     max_attack_size=0.3, noise_seed=2)
  trainer = _trainer(48, config)
  batches = trainer_lib.FixedBatches(x, y, 48, seed=0)
  before = _taylor(trainer.model, x[:300], y[:300])
  log_dir = tmp_path_factory.mktemp("tb")
  history = trainer.fit(batches, 12, log_every=4, log_dir=str(log_dir))
  after = _taylor(trainer.model, x[:300], y[:300])
  return trainer, history, before, after, log_dir


def test_a_few_steps_lower_the_loss_on_digits(trained):
  _, history, before, after, log_dir = trained
  assert after < before - 0.1, (before, after)
  assert [h["step"] for h in history] == [4, 8, 12]
  assert set(history[0]) >= {"reconstruction_loss", "benign_loss",
                             "adversarial_loss", "output_loss",
                             "benign_accuracy", "adversarial_accuracy"}
  assert list(log_dir.iterdir())  # TensorBoard events written.


def test_evaluation_and_empirical_soundness_on_digits(trained):
  """No point certified at kappa is flipped by PGD at kappa (with counts).

  L2 attacks and a small inference noise scale, so that some points are
  certified at these (small) radii; 60 votes per point.
  """
  trainer = trained[0]
  ds = data.load_digits()
  x = models.to_architecture_input(ds.test.x[:40], "mnist")
  y = ds.test.y[:40]
  kappas = [0.002, 0.005]
  result = evaluation.evaluate(
      trainer.model, x, y, kappas=kappas, attacks=("fgsm", "pgd"),
      attack_steps=3, num_samples=60, alpha=0.05, noise_scale=0.3,
      norm="2")
  print("soundness counts:", result["soundness"])
  assert result["sensitivity"] == pytest.approx(28.0)
  assert result["base_accuracy"] > 0.2
  for kappa in ("0.002", "0.005"):
    counts = result["soundness"][kappa]
    assert counts["flipped"] == 0, result["soundness"]
    assert 0 <= result["certified_accuracy"][kappa] <= (
        result["conventional_accuracy"])
    for attack in ("fgsm", "pgd"):
      assert result["robust_accuracy"][attack][kappa] <= (
          result["conventional_accuracy"])
  assert result["soundness"]["0.002"]["certified"] > 0
  assert (result["soundness"]["0.005"]["certified"]
          <= result["soundness"]["0.002"]["certified"])


def test_checkpoint_resume_continues_the_run(tmp_path):
  x, y = _digits()
  config = trainer_lib.TrainerConfig(attacks=(), noise_seed=2)
  first = _trainer(48, config)
  batches = trainer_lib.FixedBatches(x, y, 48, seed=0)
  first.fit(batches, 3, checkpoint_dir=str(tmp_path), checkpoint_every=2)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("-3")
  # A new run (different noise seed) restores weights, noise and step.
  resumed = _trainer(48, trainer_lib.TrainerConfig(attacks=(),
                                                   noise_seed=9))
  history = resumed.fit(batches, 4, checkpoint_dir=str(tmp_path),
                        log_every=1)
  assert [h["step"] for h in history] == [4]
  np.testing.assert_array_equal(resumed.taylor_loss.chi1.numpy(),
                                first.taylor_loss.chi1.numpy())
  np.testing.assert_array_equal(
      resumed.model.autoencoder.input_noise.noise.numpy(),
      first.model.autoencoder.input_noise.noise.numpy())


def test_fixed_batches_are_disjoint_and_deterministic():
  x = np.arange(50, dtype=np.float32).reshape(50, 1)
  batches = trainer_lib.FixedBatches(x, np.zeros(50), 8, seed=0)
  assert batches.num_batches == 6
  seen = np.concatenate([batches.batch(b)[0][:, 0] for b in range(6)])
  assert len(set(seen.tolist())) == 48
  assert batches.draw(5, 4) == batches.draw(5, 4)
  assert len(set(batches.draw(5, 6))) == 6
  xb, _, xa, _, b, ba = batches.step_data(3, 2)
  assert xb.shape == (16, 1) and not set(xb[:, 0]) & set(xa[:, 0])
  # Each example's batch index: it is in that fixed batch.
  for rows, index in ((xb, b), (xa, ba)):
    for row, batch in zip(rows[:, 0], index):
      assert row in batches.batch(batch)[0][:, 0]
  with pytest.raises(ValueError, match="distinct fixed batches"):
    batches.draw(0, 7)


def test_refuses_augmentation_copies():
  with pytest.raises(ValueError, match="augmentation_multiplicity"):
    trainer_lib.FixedBatches(np.zeros((10, 1)), np.zeros(10), 2,
                             augmentation_multiplicity=2)


def test_privacy_statement_states_the_assumptions():
  trainer = _trainer(48, trainer_lib.TrainerConfig(attacks=()), epsilon=1.0)
  statement = trainer.privacy_statement()
  assert trainer.epsilon == 2.0
  assert "epsilon_ae + epsilon_out" in statement
  assert "disjoint batches" in statement


def test_config_validation():
  with pytest.raises(ValueError, match="attacks"):
    trainer_lib.TrainerConfig(attacks=("fgsm",))
  with pytest.raises(ValueError, match="alpha"):
    trainer_lib.TrainerConfig(alpha=-1.0)


def test_each_fixed_batch_keeps_its_own_noise_across_epochs():
  x, y = _digits()
  trainer = _trainer(240, trainer_lib.TrainerConfig(attacks=(),
                                                    noise_seed=4))
  batches = trainer_lib.FixedBatches(x, y, 240, seed=0)
  noises = (trainer.model.autoencoder.input_noise.noise,
            trainer.model.autoencoder.hidden_noise.noise,
            trainer.taylor_loss.chi1, trainer.taylor_loss.chi2)
  before = [v.numpy() for v in noises]
  assert all(len(b) == batches.num_batches == 5 for b in before)
  # 10 steps of 2 batches of the 5: every batch is used in several epochs.
  trainer.fit(batches, 10)
  for old, variable in zip(before, noises):
    np.testing.assert_array_equal(old, variable.numpy())
    # A draw per batch, independent: no two batches share one.
    for a in range(5):
      for b in range(a + 1, 5):
        assert not np.allclose(old[a], old[b])
  # Batches that do not match the draws (4 of 240, not 5) are refused.
  with pytest.raises(ValueError, match="num_batches=batches.num_batches"):
    trainer.fit(trainer_lib.FixedBatches(x[:1000], y[:1000], 240, seed=0),
                11)


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_input_noise_is_fresh_with_the_asked_scale(kind):
  x = tf.zeros([200, 50])
  first = trainer_lib.input_noise(x, kind, 0.5).numpy()
  second = trainer_lib.input_noise(x, kind, 0.5).numpy()
  assert not np.allclose(first, second)
  n = first.size
  # Gaussian: std 0.5 (sample std's standard error ~ 0.5 / sqrt(2n));
  # Laplace: E|X| = b, standard error b / sqrt(n). 6 standard errors.
  if kind == "gaussian":
    assert abs(first.std() - 0.5) < 6 * 0.5 / np.sqrt(2 * n)
  else:
    assert abs(np.abs(first).mean() - 0.5) < 6 * 0.5 / np.sqrt(n)
  assert abs(first.mean()) < 6 * 0.5 * np.sqrt(2) / np.sqrt(n)
  np.testing.assert_array_equal(trainer_lib.input_noise(x, "none", 0.5), x)


def test_input_noise_config_validation():
  with pytest.raises(ValueError, match="input_noise"):
    trainer_lib.TrainerConfig(input_noise="uniform")
  with pytest.raises(ValueError, match="input_noise_scale"):
    trainer_lib.TrainerConfig(input_noise="gaussian", input_noise_scale=0.0)


def test_smoothing_certificate_is_cohens_radius_and_sound(trained):
  """certificate="smoothing": Gaussian votes, Cohen's L2 radius, no flips."""
  trainer = trained[0]
  ds = data.load_digits()
  x = models.to_architecture_input(ds.test.x[:30], "mnist")
  y = ds.test.y[:30]
  result = evaluation.evaluate(
      trainer.model, x, y, kappas=[0.05, 0.2], attacks=("pgd",),
      attack_steps=3, num_samples=60, alpha=0.05, noise_scale=0.25,
      norm="2", certificate="smoothing")
  assert result["certificate"] == "smoothing"
  for kappa in ("0.05", "0.2"):
    assert result["soundness"][kappa]["flipped"] == 0, result["soundness"]
  assert result["soundness"]["0.05"]["certified"] > 0
  with pytest.raises(ValueError, match="norm"):
    evaluation.evaluate(trainer.model, x, y, kappas=[0.1], norm="inf",
                        certificate="smoothing")


def test_attack_votes_set_the_draws_on_attacked_inputs_only():
  """Rows voted: num_samples per clean input, attack_votes per attacked one."""
  kernel = tf.constant(np.random.default_rng(0).normal(size=(4, 3)),
                       tf.float32)
  base = lambda x: tf.matmul(x, kernel)
  rows = []

  def noisy(x):
    rows.append(int(x.shape[0]))
    return base(x + tf.random.normal(tf.shape(x), stddev=0.1))

  x = np.random.default_rng(1).uniform(-1, 1, (5, 4)).astype(np.float32)
  y = np.argmax(base(x).numpy(), -1)
  result = evaluation.evaluate_noisy_classifier(
      base, noisy, lambda p1, p2: np.zeros_like(p1), x, y, num_classes=3,
      kappas=[0.1, 0.2], attacks=("fgsm", "pgd"), attack_steps=2,
      num_samples=30, alpha=0.05, norm="2", clip_min=-1.0, clip_max=1.0,
      batch_size=5, vote_batch_size=1000, attack_votes=7)
  # 5 clean inputs x 30 votes, then 2 attacks x 2 kappas x 5 inputs x 7.
  assert sum(rows) == 5 * 30 + 2 * 2 * 5 * 7
  assert result["num_samples"] == 30 and result["attack_votes"] == 7
