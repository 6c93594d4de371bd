"""The Tiny ImageNet architectures: StoBatch's and SecureSGD's (small sides)."""

import numpy as np
import pytest
import tensorflow as tf

from tfdp.stobatch import budget as budget_lib
from tfdp.stobatch import models
from tfdp.stobatch import securesgd

SIDE = 32  # Tests use 32x32 inputs; the architecture's default is 64.


def _build(**kwargs):
  kwargs = dict(num_classes=3, epsilon_ae=1.0, epsilon_out=1.0, batch_size=4,
                side=SIDE, noise_seed=0, **kwargs)
  return models.build_stobatch_model("tinyimagenet", **kwargs)


def _norm_layers(model):
  return [m for m in model.submodules
          if isinstance(m, (tf.keras.layers.BatchNormalization,
                            tf.keras.layers.GroupNormalization))]


@pytest.fixture(scope="module")
def saved_backbone(tmp_path_factory):
  """A randomly initialised ResNet-18 backbone and its saved .h5 weights."""
  tf.keras.utils.set_random_seed(123)
  backbone = models.resnet18_backbone(SIDE)
  bn = backbone.get_layer("conv1_bn")
  bn.gamma.assign(tf.random.uniform(bn.gamma.shape, 0.5, 1.5))
  path = str(tmp_path_factory.mktemp("weights") / "resnet18.weights.h5")
  backbone.save_weights(path)
  return backbone, path


@pytest.fixture(scope="module")
def stobatch_with_weights(saved_backbone):
  return _build(weights_path=saved_backbone[1])


def test_architecture_builds_without_batch_norm(stobatch_with_weights):
  model, budget = stobatch_with_weights
  assert models.input_side("tinyimagenet") == 64
  ae = model.autoencoder
  assert ae.kernel.shape == (7, 7, 3, 64) and ae.strides == 2
  # Budget of a 7x7 kernel on 3 channels, output side ceil(32 / 2) = 16.
  assert budget.delta2 == budget_lib.first_layer_sensitivity(3, 7, 16)
  assert budget.delta2 == 3 * (16**2 + 2) * 7**2
  assert model.body.input_shape == (None, 16, 16, 64)
  assert model.hidden_width == 256
  norms = _norm_layers(model)
  # ResNet-18's 20 BatchNorms (stem, 16 in blocks, 3 shortcuts), now GN.
  assert len(norms) == 20
  assert all(isinstance(n, tf.keras.layers.GroupNormalization)
             for n in norms)
  x = tf.random.uniform([2, SIDE, SIDE, 3], -1, 1)
  h = model.hidden(x, training=False).numpy()
  assert h.shape == (2, 256) and np.all(np.abs(h) <= 1)
  assert model(x).shape == (2, 3)


def test_weights_path_loads_the_backbone(saved_backbone,
                                         stobatch_with_weights):
  backbone, _ = saved_backbone
  model, budget = stobatch_with_weights
  conv = "v2_stack_3_block2_2_conv"
  np.testing.assert_array_equal(model.body.get_layer(conv).kernel.numpy(),
                                backbone.get_layer(conv).kernel.numpy())
  # The stem's BatchNorm gamma became the GroupNorm's gamma.
  np.testing.assert_array_equal(
      model.body.get_layer("conv1_bn").gamma.numpy(),
      backbone.get_layer("conv1_bn").gamma.numpy())
  # W1 starts from the stem kernel; the budget uses its sigma_max.
  stem = backbone.get_layer(models.RESNET_STEM).kernel.numpy()
  np.testing.assert_allclose(model.autoencoder.kernel.numpy(), stem)
  assert budget.sigma_max_w1 == pytest.approx(
      budget_lib.kernel_sigma_max(stem))
  # Without weights_path the body is freshly initialised.
  fresh, _ = _build()
  assert not np.array_equal(fresh.body.get_layer(conv).kernel.numpy(),
                            backbone.get_layer(conv).kernel.numpy())


def test_weights_file_formats_and_errors(saved_backbone, tmp_path):
  backbone, _ = saved_backbone
  # A TensorFlow checkpoint prefix loads too (into the same backbone here).
  prefix = str(tmp_path / "ckpt")
  backbone.save_weights(prefix)
  conv = backbone.get_layer("v2_stack_0_block1_1_conv")
  kept = conv.kernel.numpy()
  conv.kernel.assign(tf.zeros_like(conv.kernel))
  models.load_backbone_weights(backbone, prefix)
  np.testing.assert_array_equal(conv.kernel.numpy(), kept)
  with pytest.raises(FileNotFoundError, match=r"weights_path .*missing.h5.* "
                     r"does not exist.*never downloaded"):
    models.load_backbone_weights(backbone, tmp_path / "missing.h5")
  other = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
  other.save_weights(str(tmp_path / "other.h5"))
  with pytest.raises(ValueError, match=r"does not hold the weights of a "
                     r"ResNet-18 ResNetBackbone"):
    models.load_backbone_weights(backbone, tmp_path / "other.h5")


@pytest.mark.parametrize("architecture, kwargs, message", [
    ("mnist", {"weights_path": "w.h5"}, "weights_path is only for "
     "architecture 'tinyimagenet'"),
    ("tinyimagenet", {"norm": "none"}, "norm must be 'group' for "
     "architecture 'tinyimagenet'"),
    ("tinyimagenet", {"side": 4}, "side must be >= 8"),
])
def test_bad_arguments(architecture, kwargs, message):
  with pytest.raises(ValueError, match=message):
    models.build_stobatch_model(architecture, num_classes=3, epsilon_ae=1.0,
                                epsilon_out=1.0, batch_size=4, **kwargs)


def test_to_architecture_input():
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
  np.testing.assert_allclose(
      models.to_architecture_input(images, "tinyimagenet"), 2 * images - 1,
      atol=1e-6)
  small = models.to_architecture_input(images, "tinyimagenet", side=SIDE)
  # Resized (area: 2x2 means), not cropped.
  np.testing.assert_allclose(
      small, 2 * images.reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4)) - 1,
      atol=1e-5)
  digits = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
  x = models.to_architecture_input(digits, "tinyimagenet", side=SIDE)
  assert x.shape == (3, SIDE, SIDE, 3) and x.dtype == np.float32
  assert -1 <= x.min() and x.max() <= 1
  np.testing.assert_array_equal(x[..., 0], x[..., 2])


# SecureSGD's first layer and model.


def test_first_layer_sensitivity_hand_values():
  kernel = np.zeros((3, 3, 1, 2), np.float32)
  kernel[..., 0], kernel[0, 0, 0, 1] = 0.5, -2.0  # ||w||_1 = 4.5 and 2.
  assert securesgd.first_layer_sensitivity(
      kernel, norm="inf", output_size=4) == pytest.approx(
          4 * np.hypot(4.5, 2.0))
  sigma = np.linalg.svd(kernel.reshape(9, 2), compute_uv=False).max()
  assert securesgd.first_layer_sensitivity(
      kernel, norm="2", output_size=4, strides=2) == pytest.approx(
          2 * sigma, rel=1e-5)  # ceil(3 / 2) = 2 patches per axis.


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_first_layer_sensitivity_bounds_the_conv(norm):
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(7, 7, 3, 8)).astype(np.float32)
  bound = securesgd.first_layer_sensitivity(kernel, norm=norm,
                                            output_size=8)
  x = rng.uniform(-1, 1, size=(64, 16, 16, 3)).astype(np.float32)
  delta = rng.uniform(-1, 1, size=x.shape).astype(np.float32)
  if norm == "inf":
    delta = np.sign(delta)  # ||delta||_inf = 1.
  else:
    delta /= np.linalg.norm(delta.reshape(64, -1), axis=1)[:, None, None,
                                                           None]
  conv = lambda t: tf.nn.conv2d(t, kernel, 2, "SAME")
  change = np.linalg.norm((conv(x + delta) - conv(x)).numpy().reshape(64, -1),
                          axis=1)
  assert change.max() <= bound * (1 + 1e-5)
  # The constraint brings a kernel down to the bound, and leaves it there.
  constraint = securesgd.SensitivityConstraint(0.5, norm, 8)
  scaled = constraint(tf.constant(kernel))
  assert securesgd.first_layer_sensitivity(
      scaled, norm=norm, output_size=8) == pytest.approx(0.5, rel=1e-4)
  np.testing.assert_allclose(constraint(scaled), scaled, rtol=1e-5)


def test_securesgd_model(saved_backbone):
  _, path = saved_backbone
  model, first = securesgd.build_securesgd_model(
      num_classes=3, epsilon=1.0, delta=1e-5, attack_size=0.1, side=SIDE,
      weights_path=path)
  assert first.sigma == pytest.approx(securesgd.hgm_sigma(0.1, 1.0, 1e-5))
  noise = model.get_layer(securesgd.NOISE_LAYER)
  assert isinstance(noise, securesgd.HGMNoise)
  assert noise.stddev == first.sigma and noise.apply_at_inference
  conv = model.get_layer(securesgd.CONV_LAYER)
  assert conv.kernel.shape == (7, 7, 3, 64) and conv.strides == (2, 2)
  assert securesgd.first_layer_sensitivity(
      conv.kernel, norm="inf", output_size=16) <= 1.0
  assert not any(isinstance(m, tf.keras.layers.BatchNormalization)
                 for m in model.submodules)
  x = tf.zeros([2, SIDE, SIDE, 3])
  a, b = model(x).numpy(), model(x).numpy()
  assert a.shape == (2, 3) and not np.array_equal(a, b)  # fresh noise
  with pytest.raises(FileNotFoundError, match="weights_path"):
    securesgd.build_securesgd_model(num_classes=3, epsilon=1.0, delta=1e-5,
                                    side=SIDE, weights_path=path + ".nope")
