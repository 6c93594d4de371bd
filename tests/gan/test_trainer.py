"""The DP-GAN's discriminator step: clipping, noise, modes and budget."""

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from tests import noise_stats
from tests import oracle
from tfdp import gan
from tfdp.clipping import fast

SHAPE = (8, 8, 1)
CLASSES = 4


def _data(count=12, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((count,) + SHAPE, np.float32),
          rng.integers(0, CLASSES, count))


def _gan(conditioning="acgan", **kwargs):
  settings = dict(noise_multiplier=0.0, expected_batch_size=10,
                  dataset_size=100, l2_norm_clip=0.05)
  settings.update(kwargs)
  return gan.DPGAN.build("mlp", SHAPE, num_classes=CLASSES,
                         conditioning=conditioning, width=16, latent_dim=8,
                         **settings)


def _real_loss(model_gan):
  return lambda y, outputs: gan.losses.discriminator_real(
      model_gan.loss, model_gan.conditioning, y, outputs)


@pytest.mark.parametrize("conditioning", ["none", "cgan", "acgan"])
def test_real_gradient_is_the_clipped_sum_of_one_at_a_time_gradients(
    conditioning):
  model_gan = _gan(conditioning)
  x, y = _data()
  inputs = (x if conditioning != "cgan" else
            [x, tf.one_hot(y, CLASSES).numpy()])
  if conditioning == "cgan":
    # The oracle slices x[i:i+1]: feed the two inputs as one list per example.
    per_example = []
    for i in range(len(x)):
      with tf.GradientTape() as tape:
        out = model_gan.discriminator([x[i:i + 1], inputs[1][i:i + 1]])
        loss = tf.reduce_sum(_real_loss(model_gan)(y[i:i + 1], out))
      per_example.append([g.numpy() for g in tape.gradient(
          loss, model_gan.discriminator.trainable_variables)])
  else:
    per_example = oracle.per_example_gradients(
        model_gan.discriminator, x, y, _real_loss(model_gan))
  norms = oracle.norms(per_example)
  assert np.sum(norms > 0.05) >= 3, "too few examples clipped to test it"
  expected = [s / 10 for s in oracle.clipped_sum(per_example, 0.05)]
  actual = model_gan._real_gradients(tf.constant(x), tf.constant(y))  # pylint: disable=protected-access
  oracle.assert_gradients_close(actual, expected, rtol=1e-5)


def test_per_layer_clipping_matches_one_at_a_time_oracle():
  model_gan = _gan("acgan")
  x, y = _data()
  d = model_gan.discriminator
  per_example = oracle.per_example_gradients(d, x, y, _real_loss(model_gan))
  layers = fast.tapped_layers(d)
  clips = {layer.name: 0.01 * (k + 1) for k, layer in enumerate(layers)}
  result = fast.per_layer_clipped_gradients(d, x, y, _real_loss(model_gan),
                                            clips)
  # Each layer's part of g_i is clipped on its own.
  index = {v.ref(): j for j, v in enumerate(d.trainable_variables)}
  expected = [np.zeros(v.shape) for v in d.trainable_variables]
  for layer in layers:
    columns = [index[v.ref()] for v in layer.trainable_weights]
    for example in per_example:
      norm = np.sqrt(sum(np.sum(example[j].astype(np.float64) ** 2)
                         for j in columns))
      factor = min(1.0, clips[layer.name] / max(norm, 1e-30))
      for j in columns:
        expected[j] += factor * example[j]
  oracle.assert_gradients_close(result.gradient_sum, expected, rtol=1e-5)
  np.testing.assert_allclose(
      float(fast.per_layer_sensitivity(clips)),
      np.sqrt(sum(c * c for c in clips.values())), rtol=1e-6)
  norms = fast.per_layer_norms(d, x, y, _real_loss(model_gan))
  assert sorted(norms) == sorted(clips)
  with pytest.raises(ValueError, match="layer_clips"):
    fast.per_layer_clipped_gradients(d, x, y, _real_loss(model_gan),
                                     {"nope": 1.0})


def test_noise_on_the_real_gradient_has_std_sigma_c_over_b():
  # An empty real batch: the clipped sum is 0, the gradient is noise / B.
  sigma, clip, batch = 1.7, 0.9, 25
  model_gan = gan.DPGAN.build(
      "mlp", (16, 16, 1), num_classes=CLASSES, width=32,
      noise_multiplier=sigma, expected_batch_size=batch, dataset_size=1000,
      l2_norm_clip=clip)
  empty = tf.zeros((0, 16, 16, 1)), tf.zeros((0,), tf.int64)
  gradients = model_gan._real_gradients(*empty)  # pylint: disable=protected-access
  change = np.concatenate([g.numpy().ravel() for g in gradients])
  noise_stats.assert_noise_std(change, sigma * clip / batch)


def test_discriminator_step_counts_one_private_step_and_changes_only_d():
  model_gan = _gan(noise_multiplier=1.0)
  g_before = [v.numpy() for v in model_gan.generator.trainable_variables]
  x, y = _data()
  model_gan.discriminator_step(x, y)
  model_gan.discriminator_step(x[:7], y[:7])
  assert model_gan.spent().steps == 2
  for before, v in zip(g_before, model_gan.generator.trainable_variables):
    np.testing.assert_array_equal(before, v.numpy())
  model_gan.generator_step()
  assert model_gan.spent().steps == 2


def test_mean_sample_cost_is_added_to_epsilon():
  x, _ = _data(200)
  samples, z = gan.mean_samples.release(x, 8, 100, 0.3, seed=0)
  # z = std m / (range sqrt(d)) / sqrt(k), d = 64 pixels.
  assert z == pytest.approx(0.3 * 100 / 8 / np.sqrt(8))
  model_gan = _gan(noise_multiplier=1.2, loss="wgan_gp", mean_samples=samples,
                   mean_noise_multiplier=z, dataset_size=200)
  plain = _gan(noise_multiplier=1.2, dataset_size=200)
  x, y = _data()
  for _ in range(3):
    model_gan.discriminator_step(x, y)
    plain.discriminator_step(x, y)
  step = dp_accounting.PoissonSampledDpEvent(
      10 / 200, dp_accounting.GaussianDpEvent(1.2))
  accountant = dp_accounting.pld.PLDAccountant()
  accountant.compose(dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(step, 3),
      dp_accounting.GaussianDpEvent(z)]))
  spent = model_gan.spent()
  assert spent.release_noise_multiplier == pytest.approx(z)
  assert spent.epsilon == pytest.approx(accountant.get_epsilon(1e-5),
                                        rel=1e-9)
  assert spent.epsilon > plain.spent().epsilon + 0.1
  budget = model_gan.budget()
  assert budget["discriminator"] == pytest.approx(plain.spent().epsilon)
  alone = dp_accounting.pld.PLDAccountant()
  alone.compose(dp_accounting.GaussianDpEvent(z))
  assert budget["mean_samples"] == pytest.approx(alone.get_epsilon(1e-5))
  assert budget["total"] == spent.epsilon
  assert budget["total"] < budget["discriminator"] + budget["mean_samples"]
  assert plain.budget() == {"total": plain.spent().epsilon}


def test_mean_samples_are_noised_averages():
  rng = np.random.default_rng(1)
  x = rng.random((300, 10, 10, 1)).astype(np.float32)
  samples, _ = gan.mean_samples.release(x, 60, 50, 0.2, seed=3)
  chooser = np.random.default_rng(3)
  averages = np.stack([x[chooser.choice(300, 50, replace=False)].mean(0)
                       for _ in range(60)])
  noise_stats.assert_noise_std((samples - averages).ravel(), 0.2)
  with pytest.raises(ValueError, match="mean_size"):
    gan.mean_samples.release(x, 1, 301, 0.2)
  with pytest.raises(ValueError, match="value_range"):
    gan.mean_samples.release(x * 3, 1, 10, 0.2)


def test_no_dp_modes_need_allow_no_dp_and_report_no_epsilon():
  for mode in ("is", "none"):
    with pytest.raises(ValueError, match="no DP guarantee"):
      _gan(mode=mode)
    model_gan = _gan(mode=mode, allow_no_dp=True, noise_multiplier=1.0)
    x, y = _data()
    model_gan.discriminator_step(x, y)
    assert model_gan.spent() is None and not model_gan.is_private


def test_immediate_sensitivity_noise_scales_with_the_input_gradient():
  model_gan = _gan(mode="is", allow_no_dp=True, noise_multiplier=0.0)
  x, y = _data()
  exact = model_gan._real_gradients(tf.constant(x), tf.constant(y))  # pylint: disable=protected-access
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(_real_loss(model_gan)(
        y, model_gan.discriminator(x)))
  expected = tape.gradient(loss, model_gan.discriminator.trainable_variables)
  oracle.assert_gradients_close(exact, expected, rtol=1e-5)


def test_adaptive_and_wgan_need_mean_samples():
  with pytest.raises(ValueError, match="mean_samples"):
    _gan(mode="adaptive")
  with pytest.raises(ValueError, match="mean_samples"):
    _gan(loss="wgan_gp")
  x, y = _data(200)
  samples, z = gan.mean_samples.release(x, 4, 100, 0.3)
  model_gan = _gan(mode="adaptive", noise_multiplier=1.0,
                   mean_samples=samples, mean_noise_multiplier=z)
  model_gan.discriminator_step(x[:10], y[:10])
  assert model_gan.spent().steps == 1


def test_fake_pass_is_clipped_per_example_without_noise():
  model_gan = _gan(noise_multiplier=5.0)
  x, y = _data()
  fake_loss = lambda labels, outputs: gan.losses.discriminator_fake(
      "gan", "acgan", labels, outputs)
  per_example = oracle.per_example_gradients(model_gan.discriminator, x, y,
                                             fake_loss)
  assert np.sum(oracle.norms(per_example) > 0.05) >= 3
  expected = [s / 10 for s in oracle.clipped_sum(per_example, 0.05)]
  gradients, _ = model_gan._fake_gradients(tf.constant(x), tf.constant(y),  # pylint: disable=protected-access
                                           None)
  oracle.assert_gradients_close(gradients, expected, rtol=1e-5)


def test_train_resumes_from_its_checkpoints_and_counts_each_step_once(
    tmp_path):
  x, y = _data(100)

  def batches():
    while True:
      yield x[:10], y[:10]

  first = _gan(noise_multiplier=1.0)
  logged = []
  taken = first.train(batches(), 3, d_steps=2, log_dir=str(tmp_path / "tb"),
                      checkpoint_dir=str(tmp_path / "ckpt"), log_every=2,
                      on_log=lambda step, losses: logged.append(step))
  assert taken == 3 and logged == [2, 3]
  assert first.spent().steps == 6
  assert list((tmp_path / "tb").glob("events.*"))
  resumed = _gan(noise_multiplier=1.0)
  assert resumed.train(batches(), 5, d_steps=2,
                       checkpoint_dir=str(tmp_path / "ckpt")) == 2
  assert resumed.spent().steps == 10
  for a, b in zip(first.generator.trainable_variables[:1],
                  resumed.generator.trainable_variables[:1]):
    assert not np.array_equal(a.numpy(), b.numpy())  # Trained on from 3.


def test_adaptive_noise_has_std_sigma_sqrt_sum_of_layer_clips_over_b():
  sigma, batch, scalar = 1.3, 20, 1.5
  rng = np.random.default_rng(2)
  anchor = rng.random((1, 16, 16, 1)).astype(np.float32)
  # One mean sample and no labels: the bounds C_l are deterministic.
  model_gan = gan.DPGAN.build(
      "mlp", (16, 16, 1), num_classes=CLASSES, conditioning="none", width=32,
      noise_multiplier=sigma, expected_batch_size=batch, dataset_size=1000,
      mode="adaptive", mean_samples=anchor, mean_noise_multiplier=5.0,
      adaptive_scalar=scalar)
  loss = lambda y, outputs: gan.losses.discriminator_real(
      "gan", "none", y, outputs)
  norms = fast.per_layer_norms(model_gan.discriminator,
                               np.repeat(anchor, batch, axis=0),
                               np.zeros(batch), loss)
  sensitivity = np.sqrt(sum((scalar * float(n[0])) ** 2
                            for n in norms.values()))
  clips = model_gan._layer_clips()  # pylint: disable=protected-access
  empty = tf.zeros((0, 16, 16, 1)), tf.zeros((0,), tf.int64)
  gradients = model_gan._real_gradients(*empty, clips)  # pylint: disable=protected-access
  change = np.concatenate([g.numpy().ravel() for g in gradients])
  noise_stats.assert_noise_std(change, sigma * sensitivity / batch)
