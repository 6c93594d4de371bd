"""Tests of StoBatch's layers: fixed/fresh Laplace noise, DP auto-encoder, clip."""

import doctest
import math
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tests import noise_stats
from tfdp.stobatch import budget
from tfdp.stobatch import layers
from tfdp.stobatch import losses
from tfdp.stobatch import securesgd


def _check_laplace(sample: np.ndarray, scale: float) -> None:
  """E|X| = b (|X| ~ Exp(b), stddev b) and E X = 0 (stddev sqrt(2) b).

  The draws are secret (no seed fixes them): Z standard errors each, a false
  failure below 1e-7 (tests/noise_stats.py).
  """
  n, z = sample.size, noise_stats.Z
  assert abs(np.mean(np.abs(sample)) - scale) < z * scale / math.sqrt(n)
  assert abs(np.mean(sample)) < z * math.sqrt(2) * scale / math.sqrt(n)


def test_fixed_noise_has_laplace_scale_and_is_drawn_once():
  layer = layers.FixedLaplaceNoise(scale=2.5)
  x = tf.zeros([3, 50, 40])
  a = layer(x, training=True).numpy()
  assert layer.noise.shape == (1, 50, 40) and not layer.noise.trainable
  _check_laplace(layer.noise.numpy(), 2.5)
  # Same draw for every example and at every call, training or not.
  np.testing.assert_array_equal(a[0], a[2])
  np.testing.assert_array_equal(a, layer(x, training=True).numpy())
  np.testing.assert_array_equal(a, layer(x).numpy())
  old = layer.noise.numpy()
  layer.redraw()
  assert not np.allclose(old, layer.noise.numpy())
  _check_laplace(layer.noise.numpy(), 2.5)


def test_one_independent_draw_per_fixed_batch_reused_at_every_call():
  layer = layers.FixedLaplaceNoise(scale=1.5, num_draws=3)
  x = tf.zeros([6, 400])
  draw = tf.constant([2, 0, 2, 1, 0, 1])
  first = layer(x, training=True, draw=draw).numpy()
  assert layer.noise.shape == (3, 400)
  # Example i gets the draw of its batch: the same within a batch, and the
  # same at every later call (every epoch).
  for i, d in enumerate(draw.numpy()):
    np.testing.assert_array_equal(first[i], layer.noise[d].numpy())
  np.testing.assert_array_equal(
      first, layer(x, training=True, draw=draw).numpy())
  # Independent between batches: each Laplace, and uncorrelated (the
  # correlation of n independent pairs is about N(0, 1/n)).
  draws = layer.noise.numpy()
  for d in range(3):
    _check_laplace(draws[d], 1.5)
  for a, b in ((0, 1), (0, 2), (1, 2)):
    correlation = np.corrcoef(draws[a], draws[b])[0, 1]
    assert abs(correlation) < noise_stats.Z / math.sqrt(draws.shape[1])
  with pytest.raises(ValueError, match="one per fixed batch"):
    layer(x, training=True)


@pytest.mark.parametrize("training", [True, False])
def test_fresh_noise_is_new_at_every_call(training):
  layer = layers.FixedLaplaceNoise(scale=0.3, training_noise="fresh",
                                   inference_noise="fresh")
  x = tf.zeros([4, 2000])
  a = layer(x, training=training).numpy()
  b = layer(x, training=training).numpy()
  assert not np.allclose(a, b) and not np.allclose(a[0], a[1])
  _check_laplace(a, 0.3)
  _check_laplace(b, 0.3)


def test_fixed_in_training_fresh_at_inference():
  layer = layers.FixedLaplaceNoise(scale=1.0, inference_noise="fresh")
  x = tf.zeros([2, 300])
  fixed = layer(x, training=True).numpy()
  np.testing.assert_array_equal(fixed, layer(x, training=True).numpy())
  assert not np.allclose(layer(x).numpy(), layer(x).numpy())
  assert not np.allclose(layer(x).numpy(), fixed)


def test_noise_off_at_inference_when_asked():
  layer = layers.FixedLaplaceNoise(scale=1.0, inference_noise="none")
  x = tf.ones([2, 5])
  np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
  assert not np.allclose(layer(x, training=True).numpy(), x.numpy())


def test_seeded_draw_is_reproducible():
  a = layers.FixedLaplaceNoise(1.0, seed=5)
  b = layers.FixedLaplaceNoise(1.0, seed=5)
  x = tf.zeros([1, 7])
  np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=-1.0), "scale must be a finite number > 0"),
    (dict(scale=0.0), "scale must be a finite number > 0"),
    (dict(scale=1.0, training_noise="none"),
     "training_noise must be one of 'fixed', 'fresh', got 'none'"),
    (dict(scale=1.0, inference_noise="random"),
     "inference_noise must be one of 'fixed', 'fresh', 'none'"),
    (dict(scale=1.0, seed=-1), "seed must be an integer >= 0"),
])
def test_fixed_noise_validation(kwargs, message):
  with pytest.raises(ValueError, match=message):
    layers.FixedLaplaceNoise(**kwargs)


def _small_budget():
  # MNIST-like 8x8x1 input, 3x3 kernel, stride 2 -> 4x4 output.
  return budget.stobatch_budget(
      epsilon_ae=1.0, epsilon_out=1.0, batch_size=400, channels=1,
      kernel_size=3, output_size=4, sigma_max_w1=1.0, hidden_width=16)


def test_autoencoder_noise_follows_the_budget():
  b = budget.stobatch_budget(
      epsilon_ae=2.0, epsilon_out=0.5, batch_size=100, channels=3,
      kernel_size=4, output_size=14, sigma_max_w1=2.0, hidden_width=256)
  layer = layers.DPAutoencoderConv(
      128, 4, input_noise_scale=b.input_noise_scale,
      hidden_noise_scale=b.hidden_noise_scale)
  layer.build([None, 28, 28, 3])
  assert layer.output_size == 14  # the h of Delta2
  assert layer.input_noise.noise.shape == (1, 28, 28, 3)
  assert layer.hidden_noise.noise.shape == (1, 14, 14, 128)
  _check_laplace(layer.input_noise.noise.numpy(), 48.52)
  _check_laplace(layer.hidden_noise.noise.numpy(), 97.04)


def test_autoencoder_forward_is_noisy_conv():
  b = _small_budget()
  layer = layers.DPAutoencoderConv(
      6, 3, input_noise_scale=b.input_noise_scale,
      hidden_noise_scale=b.hidden_noise_scale, activation="linear", seed=0)
  x = tf.random.uniform([5, 8, 8, 1], seed=1)
  out = layer(x, training=True)
  expected = tf.nn.conv2d(x + layer.input_noise.noise[0], layer.kernel, 2,
                          "SAME") + layer.bias + layer.hidden_noise.noise[0]
  np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)
  np.testing.assert_array_equal(out.numpy(), layer(x).numpy())


def test_decoder_is_the_adjoint_of_the_encoder():
  # Tied weights: the decoder computes W1^T h, i.e. <conv(x), y> = <x, dec(y)>.
  layer = layers.DPAutoencoderConv(5, 3, input_noise_scale=1.0,
                                   hidden_noise_scale=1.0, use_bias=False)
  layer.build([None, 8, 8, 2])
  x = tf.random.normal([2, 8, 8, 2], seed=2)
  y = tf.random.normal([2, 4, 4, 5], seed=3)
  lhs = tf.reduce_sum(tf.nn.conv2d(x, layer.kernel, 2, "SAME") * y)
  rhs = tf.reduce_sum(x * tf.nn.conv2d_transpose(
      y, layer.kernel, tf.shape(x), 2, "SAME"))
  assert float(lhs) == pytest.approx(float(rhs), rel=1e-4)


def test_reconstruction_loss_is_taylor_of_cross_entropy():
  layer = layers.DPAutoencoderConv(
      4, 3, input_noise_scale=1e-3, hidden_noise_scale=1e-3,
      kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.05),
      seed=0)
  x = tf.random.uniform([3, 8, 8, 1], seed=4)
  loss = layer.reconstruction_loss(x)
  assert loss.shape == (3,)
  r, noisy_x = layer.reconstruction_logits(x)
  r64 = tf.cast(r, tf.float64)
  xt = tf.cast(noisy_x, tf.float64)
  # Exact cross-entropy with (noisy) targets x~: softplus(r) - r x~.
  exact = tf.reduce_sum(tf.nn.softplus(r64) - r64 * xt, axis=[1, 2, 3])
  bound = tf.reduce_sum(r64 ** 4, axis=[1, 2, 3]) / 192
  assert float(tf.reduce_max(tf.abs(r))) < 0.5
  np.testing.assert_array_less(np.abs(exact.numpy() - loss.numpy()),
                               bound.numpy() * 1.01 + 1e-4)
  # The original code's objective: order 1, absolute value of each summand.
  code = layers.DPAutoencoderConv(
      4, 3, input_noise_scale=1e-3, hidden_noise_scale=1e-3,
      reconstruction_order=1, absolute_reconstruction=True)
  code.build(x.shape)
  code.set_weights(layer.get_weights())
  r, noisy_x = code.reconstruction_logits(x)
  original = tf.abs(tf.nn.relu(r) - r * noisy_x + math.log(2.0)
                    - 0.5 * tf.abs(r))
  np.testing.assert_allclose(code.reconstruction_loss(x).numpy(),
                             tf.reduce_sum(original, [1, 2, 3]).numpy(),
                             rtol=1e-5)


def test_autoencoder_inference_modes_of_the_original_test_code():
  # Original test code: fresh input noise, no hidden noise at inference.
  layer = layers.DPAutoencoderConv(
      2, 3, input_noise_scale=0.5, hidden_noise_scale=0.5,
      activation="linear", input_inference_noise="fresh",
      hidden_inference_noise="none")
  x = tf.zeros([2, 8, 8, 1])
  np.testing.assert_array_equal(layer(x, training=True).numpy(),
                                layer(x, training=True).numpy())
  assert not np.allclose(layer(x).numpy(), layer(x).numpy())
  silent = layers.DPAutoencoderConv(
      2, 3, input_noise_scale=0.5, hidden_noise_scale=0.5,
      activation="linear", input_inference_noise="none",
      hidden_inference_noise="none")
  silent.build(x.shape)
  silent.set_weights(layer.get_weights())
  expected = tf.nn.conv2d(x, silent.kernel, 2, "SAME") + silent.bias
  np.testing.assert_allclose(silent(x).numpy(), expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_noise_scale=-1.0), "input_noise_scale must be a finite"),
    (dict(hidden_noise_scale=0.0), "hidden_noise_scale must be a finite"),
    (dict(filters=0), "filters must be an integer >= 1"),
    (dict(strides=0), "strides must be an integer >= 1"),
    (dict(padding="full"), "padding must be one of 'same', 'valid'"),
    (dict(reconstruction_order=3), "reconstruction_order must be one of 1, 2"),
    (dict(hidden_inference_noise="off"),
     "hidden_inference_noise must be one of 'fixed', 'fresh', 'none'"),
])
def test_autoencoder_validation(kwargs, message):
  args = dict(filters=2, kernel_size=3, input_noise_scale=1.0,
              hidden_noise_scale=1.0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    layers.DPAutoencoderConv(**args)


def test_clip_hidden():
  x = tf.constant([[-3.0, -1.0, 0.25, 1.0, 9.0]])
  np.testing.assert_array_equal(layers.ClipHidden()(x).numpy(),
                                [[-1.0, -1.0, 0.25, 1.0, 1.0]])
  np.testing.assert_array_equal(layers.clip_hidden(x).numpy(),
                                [[-1.0, -1.0, 0.25, 1.0, 1.0]])
  with pytest.raises(ValueError, match="limit must be a finite number > 0"):
    layers.ClipHidden(limit=0.0)


def test_model_save_round_trip_keeps_fixed_noise(tmp_path):
  b = _small_budget()
  inputs = tf.keras.Input([8, 8, 1])
  h = layers.DPAutoencoderConv(
      4, 3, input_noise_scale=b.input_noise_scale,
      hidden_noise_scale=b.hidden_noise_scale, name="ae")(inputs)
  h = tf.keras.layers.Flatten()(h)
  h = layers.FixedLaplaceNoise(0.1, name="extra_noise")(h)
  h = tf.keras.layers.Dense(16)(h)
  h = securesgd.HGMNoise(1.0, 1.0, 1e-5, apply_at_inference=False)(h)
  h = layers.ClipHidden()(h)
  outputs = tf.keras.layers.Dense(3)(h)
  model = tf.keras.Model(inputs, outputs)
  x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
  before = model.predict(x, verbose=0)
  path = str(tmp_path / "stobatch.keras")
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-6)
  ae = loaded.get_layer("ae")
  np.testing.assert_array_equal(ae.input_noise.noise.numpy(),
                                model.get_layer("ae").input_noise.noise.numpy())
  assert ae.get_config()["hidden_noise_scale"] == b.hidden_noise_scale
  # And the reconstruction loss is reproduced too.
  np.testing.assert_allclose(
      ae.reconstruction_loss(x).numpy(),
      model.get_layer("ae").reconstruction_loss(x).numpy(), rtol=1e-6)


@pytest.mark.parametrize("module", [layers, losses, securesgd])
def test_docstring_examples(module):
  result = doctest.testmod(module, extraglobs={"tf": tf}, verbose=False)
  assert result.attempted > 0 and result.failed == 0


def test_reconstruction_loss_trains_the_kernel_not_the_noise():
  layer = layers.DPAutoencoderConv(4, 3, input_noise_scale=0.01,
                                   hidden_noise_scale=0.01, seed=0)
  x = tf.random.uniform([8, 8, 8, 1], seed=5)
  layer.build(x.shape)
  assert {v.name.split("/")[-1] for v in layer.trainable_variables} == {
      "kernel:0", "bias:0"}
  assert len(layer.non_trainable_variables) == 2
  opt = tf.keras.optimizers.SGD(0.01)
  first = None
  for _ in range(5):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(layer.reconstruction_loss(x))
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy()))
               for g in grads)
    opt.apply_gradients(zip(grads, layer.trainable_variables))
    first = float(loss) if first is None else first
  assert float(loss) < first


_MIRRORED = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfdp.stobatch import layers
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
  layer = layers.FixedLaplaceNoise(1.0)
  layer.build([None, 64])
values = [v.numpy() for v in strategy.experimental_local_results(layer.noise)]
assert len(values) == 2
assert np.array_equal(values[0], values[1]), "replicas drew different noise"
out = strategy.run(lambda: layer(tf.zeros([2, 64]), training=True))
outs = [o.numpy() for o in strategy.experimental_local_results(out)]
assert np.array_equal(outs[0], outs[1])
print("OK")
"""


def test_fixed_noise_is_the_same_draw_on_every_replica():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  result = subprocess.run([sys.executable, "-c", _MIRRORED],
                          capture_output=True, text=True, timeout=120,
                          cwd=str(pathlib.Path(__file__).resolve().parents[2]),
                          check=False)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


def test_forward_noise_none_keeps_the_draws_in_the_reconstruction_only():
  b = _small_budget()
  kwargs = dict(filters=6, kernel_size=3,
                input_noise_scale=b.input_noise_scale,
                hidden_noise_scale=b.hidden_noise_scale,
                activation="linear", seed=0)
  clean = layers.DPAutoencoderConv(forward_noise="none", **kwargs)
  noisy = layers.DPAutoencoderConv(**kwargs)
  x = tf.random.uniform([5, 8, 8, 1], seed=1)
  clean.build(x.shape)
  noisy.build(x.shape)
  noisy.set_weights(clean.get_weights())
  # The classifier path: the plain convolution in training, no draw added.
  expected = tf.nn.conv2d(x, clean.kernel, 2, "SAME") + clean.bias
  np.testing.assert_allclose(clean(x, training=True).numpy(),
                             expected.numpy(), atol=1e-5)
  assert np.max(np.abs(noisy(x, training=True).numpy() -
                       expected.numpy())) > 1.0
  # The reconstruction objective (what trains W1) still carries the draws:
  # the same loss as the paper's layer with the same weights and noise.
  np.testing.assert_allclose(
      clean.reconstruction_loss(x, training=True).numpy(),
      noisy.reconstruction_loss(x, training=True).numpy(), rtol=1e-6)
  assert clean.get_config()["forward_noise"] == "none"
  with pytest.raises(ValueError, match="forward_noise"):
    layers.DPAutoencoderConv(forward_noise="clean", **kwargs)
