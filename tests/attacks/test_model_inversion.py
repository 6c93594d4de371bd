"""tfdp.attacks.model_inversion against independent references."""

import doctest

import numpy as np
import pytest
import tensorflow as tf

from tfdp.attacks import conditional_gan
from tfdp.attacks import model_inversion


def _identity(images, training=None):
  del training
  return images


def _linear_target(num_classes=3, side=4, seed=0):
  """Flatten + Dense with known weights: logits = flat(x) @ W + b."""
  rng = np.random.default_rng(seed)
  model = tf.keras.Sequential([tf.keras.Input([side, side, 1]),
                               tf.keras.layers.Flatten(),
                               tf.keras.layers.Dense(num_classes)])
  weights = rng.normal(size=(side * side, num_classes)).astype(np.float32)
  bias = rng.normal(size=num_classes).astype(np.float32)
  model.layers[-1].set_weights([weights, bias])
  return model, weights, bias


def test_margin_loss_matches_its_definition_and_gradient():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(32, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=32)
  expected = [-row[y] + max(v for k, v in enumerate(row) if k != y)
              for row, y in zip(logits, labels)]
  variable = tf.Variable(logits)
  with tf.GradientTape() as tape:
    loss = model_inversion.margin_loss(variable, labels)
    total = tf.reduce_sum(loss)
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6, atol=1e-6)
  gradient = tape.gradient(total, variable).numpy()
  for row, y, grad in zip(logits, labels, gradient):
    others = np.where(np.arange(5) == y, -np.inf, row)
    reference = np.zeros(5)
    reference[np.argmax(others)] += 1.0
    reference[y] -= 1.0
    np.testing.assert_allclose(grad, reference, atol=1e-6)


def test_margin_loss_needs_two_classes():
  with pytest.raises(ValueError, match="2 classes"):
    model_inversion.margin_loss(tf.zeros([2, 1]), [0, 0])


def test_top_n_selection_keeps_the_n_most_probable_per_class():
  target, weights, bias = _linear_target()
  images = np.random.default_rng(2).random((50, 4, 4, 1), np.float32)
  selection = model_inversion.top_n_selection(target, images, n=7,
                                              num_classes=3)
  logits = images.reshape(50, -1).astype(np.float64) @ weights + bias
  probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  for k in range(3):
    kept = selection.indices[selection.labels == k]
    assert len(kept) == 7
    # Every kept image is at least as probable for k as every one left out.
    left_out = np.setdiff1d(np.arange(50), kept)
    assert probabilities[kept, k].min() >= probabilities[left_out, k].max()
    np.testing.assert_allclose(selection.probabilities[selection.labels == k],
                               probabilities[kept, k], rtol=1e-5)
  np.testing.assert_array_equal(selection.images, images[selection.indices])


def test_top_n_selection_refuses_bad_arguments():
  target, _, _ = _linear_target()
  images = np.zeros((5, 4, 4, 1), np.float32)
  with pytest.raises(ValueError, match="fewer than n=6"):
    model_inversion.top_n_selection(target, images, n=6, num_classes=3)
  with pytest.raises(ValueError, match="num_classes=4"):
    model_inversion.top_n_selection(target, images, n=2, num_classes=4)
  with pytest.raises(ValueError, match="n must be"):
    model_inversion.top_n_selection(target, images, n=0, num_classes=3)


@pytest.mark.parametrize("augment", [_identity, None],
                         ids=["plain", "augmented"])
def test_latent_optimisation_lowers_the_margin_loss(augment):
  tf.keras.utils.set_random_seed(3)
  target, _, _ = _linear_target(side=8)
  generator = conditional_gan.resnet_generator((8, 8, 1), num_classes=3,
                                               latent_dim=8, width=4)
  labels = np.repeat(np.arange(3), 4)
  result = model_inversion.reconstruct(generator, target, labels, steps=60,
                                       augment=augment, seed=1)
  # The reported losses are the target's margins on the returned images.
  np.testing.assert_allclose(
      result.final_loss,
      model_inversion.margin_loss(target(result.images), labels).numpy(),
      rtol=1e-4, atol=1e-4)
  assert result.final_loss.mean() < result.initial_loss.mean() - 0.5
  assert np.mean(result.final_loss < result.initial_loss) >= 0.75


def test_inversion_gan_learns_what_the_target_calls_each_class():
  tf.keras.utils.set_random_seed(4)
  target, _, _ = _linear_target(side=8)
  images = np.random.default_rng(5).random((30, 8, 8, 1), np.float32)
  gan = model_inversion.InversionGAN(
      target, (8, 8, 1), num_classes=3, latent_dim=8, width=4,
      inversion_weight=1.0, d_steps=1, batch_size=16, learning_rate=1e-2,
      augment=_identity)
  labels = tf.constant(np.repeat(np.arange(3), 20), tf.int32)
  z = tf.random.stateless_normal([60, 8], [0, 1])

  def mean_margin():
    return float(tf.reduce_mean(model_inversion.margin_loss(
        target(gan.generator([z, labels], training=False)), labels)))

  before = mean_margin()
  seen = []
  gan.train(images, np.arange(30) % 3, steps=40,
            callback=lambda step, metrics: seen.append(step))
  assert seen == list(range(1, 41))
  assert mean_margin() < before - 0.5


def test_inversion_gan_refuses_empty_or_mismatched_data():
  target, _, _ = _linear_target(side=8)
  gan = model_inversion.InversionGAN(target, (8, 8, 1), num_classes=3,
                                     width=2, latent_dim=4)
  with pytest.raises(ValueError, match="empty"):
    gan.train(np.zeros((0, 8, 8, 1), np.float32), np.zeros(0), steps=1)
  with pytest.raises(ValueError, match="differ in length"):
    gan.train(np.zeros((3, 8, 8, 1), np.float32), np.zeros(2), steps=1)
  with pytest.raises(ValueError, match="inversion_weight"):
    model_inversion.InversionGAN(target, (8, 8, 1), num_classes=3,
                                 inversion_weight=-1.0)


def test_top_k_accuracy_and_knn_distance_by_brute_force():
  logits = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [2.0, 3.0, 1.0]])
  labels = np.array([0, 0, 0])
  assert model_inversion.top_k_accuracy(logits, labels, 1) == pytest.approx(
      1 / 3)
  assert model_inversion.top_k_accuracy(logits, labels, 2) == pytest.approx(
      2 / 3)
  assert model_inversion.top_k_accuracy(logits, labels, 5) == 1.0
  rng = np.random.default_rng(6)
  private, private_labels = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
  queries, query_labels = rng.normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
  expected = np.mean([
      min(np.sum((p - q) ** 2) for p, c in zip(private, private_labels)
          if c == label) for q, label in zip(queries, query_labels)])
  assert model_inversion.knn_distance(
      queries, query_labels, private, private_labels) == pytest.approx(
          expected)
  with pytest.raises(ValueError, match="class 2"):
    model_inversion.knn_distance(queries, np.full(5, 2), private,
                                 private_labels)


def test_private_images_judged_against_themselves_are_at_distance_zero():
  from tfdp.gan import evaluation  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(7)
  x = rng.random((60, 8, 8, 1), np.float32)
  y = np.arange(60) % 3
  evaluator = evaluation.train_classifier(x, y, num_classes=3, epochs=1)
  metrics = model_inversion.evaluate_reconstructions(evaluator, x, y, x, y)
  assert metrics["knn_distance"] == pytest.approx(0.0, abs=1e-9)
  assert metrics["frechet_distance"] == pytest.approx(0.0, abs=1e-3)
  logits = evaluator.predict(x, verbose=0)
  assert metrics["top1"] == pytest.approx(np.mean(logits.argmax(1) == y))
  assert metrics["top5"] == 1.0  # 3 classes: always among the top 5.


def test_docstring_examples_run():
  result = doctest.testmod(model_inversion, extraglobs={"np": np, "tf": tf})
  assert result.attempted > 0 and result.failed == 0
