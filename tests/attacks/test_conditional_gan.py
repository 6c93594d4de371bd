"""tfdp.attacks.conditional_gan: its layers against numpy references."""

import doctest

import numpy as np
import pytest
import tensorflow as tf

from tfdp.attacks import conditional_gan


def test_conditional_batch_norm_uses_each_examples_class_row():
  rng = np.random.default_rng(0)
  layer = conditional_gan.ConditionalBatchNormalization(num_classes=3,
                                                        epsilon=1e-3)
  x = rng.normal(2.0, 3.0, size=(6, 4, 4, 5)).astype(np.float32)
  labels = np.array([0, 2, 1, 2, 0, 1])
  layer([x, labels])
  gamma = rng.normal(size=(3, 5)).astype(np.float32)
  beta = rng.normal(size=(3, 5)).astype(np.float32)
  layer.gamma.assign(gamma)
  layer.beta.assign(beta)
  out = layer([x, labels], training=True).numpy()
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  expected = (gamma[labels][:, None, None] * (x - mean) / np.sqrt(var + 1e-3)
              + beta[labels][:, None, None])
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def _kernel_with_spectrum_gap(rng, shape):
  """A random kernel whose largest singular value is twice the next one.

  Power iteration converges as (sigma_2 / sigma_1)^(2n): with a random
  kernel's gap, 200 iterations were sometimes not enough for 1e-3.
  """
  matrix = rng.normal(size=(int(np.prod(shape[:-1])), shape[-1]))
  left, singular, right = np.linalg.svd(matrix, full_matrices=False)
  spectrum = np.linspace(1.0, 0.2, len(singular))
  spectrum[0] = 2.0
  return (left * spectrum) @ right


def test_spectral_layers_divide_by_the_largest_singular_value():
  rng = np.random.default_rng(1)
  for layer, inputs in [
      (conditional_gan.SpectralConv2D(6, 3, use_bias=False),
       tf.constant(rng.random((1, 5, 5, 4)), tf.float32)),
      (conditional_gan.SpectralDense(6, use_bias=False),
       tf.constant(rng.random((1, 4)), tf.float32))]:
    layer(inputs, training=True)
    layer.kernel.assign(np.reshape(
        _kernel_with_spectrum_gap(rng, layer.kernel.shape),
        layer.kernel.shape))
    for _ in range(200):  # Power iterations converge on sigma_max.
      out = layer(inputs, training=True)
    matrix = layer.kernel.numpy().reshape(-1, 6)
    sigma = np.linalg.svd(matrix, compute_uv=False)[0]
    plain = (tf.nn.conv2d(inputs, layer.kernel / sigma, 1, "VALID")
             if isinstance(layer, tf.keras.layers.Conv2D)
             else inputs @ (layer.kernel / sigma))
    np.testing.assert_allclose(out.numpy(), plain.numpy(), rtol=1e-3,
                               atol=1e-5)


def test_spectral_normalisation_passes_gradients_through_sigma():
  """d/dW of ||x W / sigma(W)|| differs from the gradient with sigma fixed."""
  layer = conditional_gan.SpectralDense(3, use_bias=False)
  x = tf.constant([[1.0, -2.0, 0.5]])
  layer(x, training=True)
  for _ in range(100):
    layer(x, training=True)
  with tf.GradientTape() as tape:
    out = tf.reduce_sum(layer(x) ** 2)
  gradient = tape.gradient(out, layer.kernel).numpy()
  sigma = np.linalg.svd(layer.kernel.numpy(), compute_uv=False)[0]
  kernel = layer.kernel.numpy().astype(np.float64)
  step = 1e-4
  numeric = np.zeros_like(kernel)
  for i in np.ndindex(kernel.shape):
    for sign in (1, -1):
      shifted = kernel.copy()
      shifted[i] += sign * step
      value = np.sum((x.numpy() @ (shifted / np.linalg.svd(
          shifted, compute_uv=False)[0])) ** 2)
      numeric[i] += sign * value / (2 * step)
  np.testing.assert_allclose(gradient, numeric, rtol=2e-2, atol=2e-3)
  fixed_sigma = 2 * x.numpy().T @ (x.numpy() @ kernel / sigma) / sigma
  assert np.abs(gradient - fixed_sigma).max() > 1e-3


def test_models_build_for_several_sizes_and_serialise(tmp_path):
  for shape in [(8, 8, 1), (28, 28, 1), (32, 32, 3)]:
    g = conditional_gan.resnet_generator(shape, 4, latent_dim=6, width=4)
    d = conditional_gan.projection_discriminator(shape, 4, width=4)
    labels = tf.constant([0, 3])
    images = g([tf.zeros([2, 6]), labels])
    assert images.shape == (2, *shape)
    assert float(tf.reduce_min(images)) >= 0
    assert float(tf.reduce_max(images)) <= 1
    assert d([images, labels], training=True).shape == (2, 1)
  path = str(tmp_path / "g.keras")
  g.save(path)
  loaded = tf.keras.models.load_model(path)
  z = tf.random.normal([2, 6])
  np.testing.assert_allclose(loaded([z, labels]).numpy(),
                             g([z, labels]).numpy(), atol=1e-6)


def test_projection_discriminator_depends_on_the_label():
  tf.keras.utils.set_random_seed(2)
  d = conditional_gan.projection_discriminator((8, 8, 1), 3, width=4)
  images = tf.random.uniform([1, 8, 8, 1])
  outputs = [float(d([images, tf.constant([k])])) for k in range(3)]
  assert len(set(np.round(outputs, 6))) == 3


def test_hinge_losses():
  real, fake = tf.constant([2.0, 0.5]), tf.constant([-2.0, 0.0])
  # relu(1 - real) = [0, 0.5]; relu(1 + fake) = [0, 1].
  assert float(conditional_gan.hinge_discriminator_loss(real, fake)) == (
      pytest.approx(0.25 + 0.5))
  assert float(conditional_gan.hinge_generator_loss(fake)) == 1.0


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match="divisible by 4"):
    conditional_gan.resnet_generator((10, 10, 1), 3)
  with pytest.raises(ValueError, match="image_shape must be"):
    conditional_gan.projection_discriminator((8, 8), 3)


def test_docstring_examples_run():
  result = doctest.testmod(conditional_gan, extraglobs={"tf": tf})
  assert result.attempted > 0 and result.failed == 0
