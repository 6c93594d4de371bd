"""AdversarialTraining: validation, the PGD threat model, per-example
independence, tf.function, and training inside make_private."""

from cleverhans.tf2.attacks import projected_gradient_descent as cleverhans_pgd
import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp
from tfdp.robust import AdversarialTraining

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _norms(delta, norm):
  flat = np.reshape(delta, (len(delta), -1)).astype(np.float64)
  if norm == "inf":
    return np.max(np.abs(flat), axis=1)
  return np.linalg.norm(flat, axis=1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(epsilon=-0.1), r"epsilon must be a finite number > 0, got -0.1"),
    (dict(epsilon=0), r"epsilon must be a finite number > 0, got 0"),
    (dict(epsilon=float("inf")), r"epsilon must be a finite number > 0"),
    (dict(epsilon=0.1, steps=0), r"steps must be an integer >= 1, got 0"),
    (dict(epsilon=0.1, steps=2.5), r"steps must be an integer >= 1"),
    (dict(epsilon=0.1, step_size=0), r"step_size must be a finite number > 0"),
    (dict(epsilon=0.1, step_size=0.2),
     r"step_size must be in \(0, epsilon=0.1\], got 0.2"),
    (dict(epsilon=0.1, ratio=0), r"ratio must be in \(0, 1\], got 0"),
    (dict(epsilon=0.1, ratio=1.5), r"ratio must be in \(0, 1\], got 1.5"),
    (dict(epsilon=0.1, norm="1"), r"norm must be one of 'inf' .*got '1'"),
    (dict(epsilon=0.1, norm=1), r"norm must be one of .*got 1"),
    (dict(epsilon=0.1, norm="l2"), r"norm must be one of"),
    (dict(epsilon=0.1, clip_min=1.0, clip_max=0.0),
     r"clip_min must be < clip_max, got clip_min=1.0, clip_max=0.0"),
    (dict(epsilon=0.1, clip_min=0.5, clip_max=0.5),
     r"clip_min must be < clip_max"),
    (dict(epsilon=0.1, clip_min=0.0),
     r"clip_min and clip_max must be given together"),
    (dict(epsilon=0.1, clip_min=0.0, clip_max=float("nan")),
     r"clip_max must be a finite number"),
    (dict(epsilon=0.1, random_start="yes"),
     r"random_start must be True or False"),
])
def test_bad_settings_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    AdversarialTraining(**kwargs)


@pytest.mark.parametrize("norm, expected", [
    ("inf", "inf"), (np.inf, "inf"), (float("inf"), "inf"),
    ("2", "2"), (2, "2"), (2.0, "2")])
def test_norm_spellings_and_config_round_trip(norm, expected):
  adversarial = AdversarialTraining(epsilon=0.3, norm=norm, clip_min=0,
                                    clip_max=1)
  assert adversarial.norm == expected
  # Default step size: 2.5 * epsilon / steps (Madry et al.), at most epsilon.
  assert adversarial.step_size == pytest.approx(0.3 / 4)
  assert AdversarialTraining(epsilon=0.3, steps=1).step_size == 0.3
  config = adversarial.get_config()
  assert config["norm"] == expected and config["clip_max"] == 1.0
  assert AdversarialTraining.from_config(config) == adversarial


def test_make_private_refuses_an_object_without_perturb():
  model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
  with pytest.raises(ValueError, match="perturb"):
    tfdp.make_private(model, adversarial=object())


@pytest.mark.parametrize("norm, epsilon", [("inf", 0.1), ("2", 0.8)])
def test_perturb_stays_in_the_ball_and_range_and_raises_the_loss(
    trained_model, digits, norm, epsilon):
  x, y = digits.test.x[:128], digits.test.y[:128]
  adversarial = AdversarialTraining(epsilon=epsilon, norm=norm, steps=10,
                                    clip_min=0.0, clip_max=1.0)
  tf.random.set_seed(0)
  x_adv = adversarial.perturb(trained_model, x, y).numpy()
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  norms = _norms(x_adv - x, norm)
  assert np.all(norms <= epsilon * (1 + 1e-5))
  assert np.all(norms > 0.25 * epsilon)  # every example moved
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  clean_loss = LOSS(y, trained_model(x)).numpy()
  adversarial_loss = LOSS(y, trained_model(x_adv)).numpy()
  assert np.mean(adversarial_loss) > np.mean(clean_loss) + 0.5
  assert np.mean(adversarial_loss > clean_loss) > 0.95


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_perturb_equals_cleverhans_pgd_with_true_labels(trained_model, digits,
                                                        norm):
  x, y = digits.test.x[:64], digits.test.y[:64]
  adversarial = AdversarialTraining(epsilon=0.2, norm=norm, steps=5,
                                    random_start=False, clip_min=0.0,
                                    clip_max=1.0)
  expected = cleverhans_pgd.projected_gradient_descent(
      lambda t: trained_model(t, training=False), x, eps=0.2,
      eps_iter=0.1, nb_iter=5, norm=np.inf if norm == "inf" else 2,
      clip_min=0.0, clip_max=1.0, y=y, rand_init=False)
  np.testing.assert_allclose(adversarial.perturb(trained_model, x, y),
                             expected, atol=1e-6)


def test_ratio_replaces_each_example_by_its_own_coin(trained_model, digits):
  x, y = digits.train.x[:400], digits.train.y[:400]
  adversarial = AdversarialTraining(epsilon=0.1, steps=3, ratio=0.25,
                                    random_start=False, clip_min=0.0,
                                    clip_max=1.0)
  tf.random.set_seed(1)
  x_out = adversarial.perturb(trained_model, x, y).numpy()
  changed = np.any(x_out != x, axis=(1, 2, 3))
  # Binomial(400, 0.25): mean 100, standard deviation 8.7; 5 sd either side.
  assert 100 - 5 * 8.7 < changed.sum() < 100 + 5 * 8.7
  # Not a prefix of the batch: each example has its own coin.
  assert not np.all(changed[:changed.sum()])
  # The others are bitwise unchanged (checked by `changed`); the replaced
  # ones are their own adversarial examples.
  np.testing.assert_allclose(
      x_out[changed], adversarial.attack(trained_model, x[changed],
                                         y[changed]), atol=1e-6)
  assert x_out.shape == x.shape


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_adversarial_example_depends_only_on_its_own_example(
    trained_model, digits, ratio):
  x, y = digits.test.x[:32].copy(), digits.test.y[:32].copy()
  adversarial = AdversarialTraining(epsilon=0.1, steps=5, ratio=ratio,
                                    random_start=False, clip_min=0.0,
                                    clip_max=1.0)
  tf.random.set_seed(3)
  before = adversarial.perturb(trained_model, x, y).numpy()
  x[7], y[7] = digits.test.x[100], digits.test.y[100]
  tf.random.set_seed(3)
  after = adversarial.perturb(trained_model, x, y).numpy()
  others = np.arange(32) != 7
  assert np.any(before[7] != after[7])
  np.testing.assert_allclose(after[others], before[others], atol=1e-6)


def test_perturb_in_tf_function_with_unknown_batch_and_label_encodings(
    trained_model, digits):
  x, y = digits.test.x[:24], digits.test.y[:24]
  adversarial = AdversarialTraining(epsilon=0.1, steps=2, random_start=False,
                                    clip_min=0.0, clip_max=1.0)
  expected = adversarial.perturb(trained_model, x, y).numpy()
  sparse = tf.function(
      lambda xb, yb: adversarial.perturb(trained_model, xb, yb),
      input_signature=(tf.TensorSpec([None, 8, 8, 1], tf.float32),
                       tf.TensorSpec([None], tf.int64)))
  np.testing.assert_allclose(sparse(x, y), expected, atol=1e-6)
  assert sparse(x[:0], y[:0]).shape == (0, 8, 8, 1)
  # Labels [B, 1] and one-hot [B, 10] through one trace whose label width
  # is unknown: the conversion is decided at run time.
  any_width = tf.function(
      lambda xb, yb: adversarial.perturb(trained_model, xb, yb),
      input_signature=(tf.TensorSpec([None, 8, 8, 1], tf.float32),
                       tf.TensorSpec([None, None], tf.int64)))
  for labels in (y[:, None], np.eye(10, dtype=np.int64)[y]):
    np.testing.assert_allclose(any_width(x, labels), expected, atol=1e-6)
  assert any_width.experimental_get_tracing_count() == 1
  half = AdversarialTraining(epsilon=0.1, steps=1, ratio=0.5)
  traced = tf.function(lambda xb, yb: half.perturb(trained_model, xb, yb),
                       input_signature=(
                           tf.TensorSpec([None, 8, 8, 1], tf.float32),
                           tf.TensorSpec([None], tf.int64)))
  assert traced(x, y).shape == x.shape
  assert traced(x[:0], y[:0]).shape == (0, 8, 8, 1)


def _mlp():
  tf.keras.utils.set_random_seed(0)
  return tf.keras.Sequential([
      tf.keras.layers.Flatten(input_shape=(8, 8, 1)),
      tf.keras.layers.Dense(16, activation="tanh"),
      tf.keras.layers.Dense(10),
  ])


def test_private_step_clips_the_adversarial_examples(digits):
  """One noiseless step equals the clipped average of the PGD examples."""
  x, y = digits.train.x[:16], digits.train.y[:16]
  adversarial = AdversarialTraining(epsilon=0.2, steps=3, random_start=False,
                                    clip_min=0.0, clip_max=1.0)
  model = _mlp()
  x_adv = adversarial.perturb(model, x, y).numpy()
  assert np.any(x_adv != x)
  expected = oracle.clipped_sum(
      oracle.per_example_gradients(model, x_adv, y, LOSS), 0.5)
  model = tfdp.make_private(model, adversarial=adversarial)
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=1.0, l2_norm_clip=0.5, noise_multiplier=0.0,
      expected_batch_size=len(x)), loss=LOSS)
  before = [v.numpy() for v in model.trainable_variables]
  model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
  change = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
  oracle.assert_gradients_close(change, [e / len(x) for e in expected], 1e-5)


def test_fit_with_dpsgd_and_poisson_batches(digits):
  batches = tfdp.data.poisson_batches(digits.train.x[:512],
                                      digits.train.y[:512], 64, seed=0)
  model = tfdp.make_private(_mlp(), adversarial=AdversarialTraining(
      epsilon=0.1, steps=2, ratio=0.5, clip_min=0.0, clip_max=1.0))
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=1.0,
      expected_batch_size=64), loss=LOSS, metrics=["accuracy"])
  history = model.fit(batches.dataset, epochs=2, verbose=0)
  assert np.all(np.isfinite(history.history["loss"]))
  assert history.history["loss"][-1] < history.history["loss"][0]


def test_ratio_under_xla_keeps_the_unselected_examples(trained_model,
                                                       digits):
  x, y = digits.train.x[:200], digits.train.y[:200]
  adversarial = AdversarialTraining(epsilon=0.1, steps=2, ratio=0.5,
                                    clip_min=0.0, clip_max=1.0)
  compiled = tf.function(
      lambda xb, yb: adversarial.perturb(trained_model, xb, yb),
      jit_compile=True)
  x_out = compiled(x, y).numpy()
  changed = np.any(x_out != x, axis=(1, 2, 3))
  # Binomial(200, 0.5): mean 100, standard deviation 7.1; 5 sd either side.
  assert 100 - 5 * 7.1 < changed.sum() < 100 + 5 * 7.1
  assert np.all(_norms(x_out - x, "inf") <= 0.1 * (1 + 1e-5))
