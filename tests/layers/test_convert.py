"""convert_batch_norm: BatchNormalization -> GroupNormalization or
PublicBatchNormalization, weights carried over, keras-cv ResNet-18."""

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.clipping import fast
from tfdp.layers import convert_batch_norm
from tfdp.layers import PublicBatchNormalization

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _randomize_batch_norms(model, rng):
  """Non-trivial BN weights and moving statistics, so that copies show."""
  for layer in [model] + list(model.submodules):
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      shape = layer.moving_mean.shape
      layer.gamma.assign(1.0 + 0.3 * rng.normal(size=shape))
      layer.beta.assign(0.3 * rng.normal(size=shape))
      layer.moving_mean.assign(0.5 * rng.normal(size=shape))
      layer.moving_variance.assign(0.5 + rng.uniform(size=shape))


def _small_model(seed=0):
  tf.keras.utils.set_random_seed(seed)
  inner = tf.keras.Sequential([
      tf.keras.layers.Conv2D(6, 3, input_shape=(6, 6, 2)),
      tf.keras.layers.BatchNormalization(name="inner_bn"),
      tf.keras.layers.Activation("relu"),
  ], name="inner")
  inputs = tf.keras.Input((6, 6, 2))
  x = tf.keras.layers.Flatten()(inner(inputs))
  x = tf.keras.layers.Dense(4)(x)
  x = tf.keras.layers.BatchNormalization(name="outer_bn")(x)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="head")(x))
  _randomize_batch_norms(model, np.random.default_rng(seed))
  return model


def _weights_by_name(model):
  return {w.name: w.numpy() for w in model.weights}


def test_public_batch_conversion_keeps_inference_and_all_weights():
  model = _small_model()
  x = np.random.default_rng(1).normal(size=(3, 6, 6, 2)).astype(np.float32)
  converted = convert_batch_norm(model, to="public_batch")
  new_layers = [l for l in converted.submodules
                if isinstance(l, PublicBatchNormalization)]
  assert sorted(l.name for l in new_layers) == ["inner_bn", "outer_bn"]
  assert not any(isinstance(l, tf.keras.layers.BatchNormalization)
                 for l in converted.submodules)
  np.testing.assert_allclose(converted(x), model(x), atol=1e-5)
  old, new = _weights_by_name(model), _weights_by_name(converted)
  for name, value in old.items():  # Every old weight exists with its value.
    np.testing.assert_array_equal(new[name], value)
  layer = converted.get_layer("inner").get_layer("inner_bn")
  original = model.get_layer("inner").get_layer("inner_bn")
  assert (layer.epsilon, layer.momentum) == (original.epsilon,
                                             original.momentum)
  # A copy, not shared: training the new model leaves the old one alone.
  assert not {w.ref() for w in model.weights} & {w.ref()
                                                  for w in converted.weights}


def test_group_conversion_chooses_groups_and_copies_the_affine_weights():
  model = _small_model()
  converted = convert_batch_norm(model, to="group", groups=4)
  inner = converted.get_layer("inner").get_layer("inner_bn")
  outer = converted.get_layer("outer_bn")
  assert isinstance(inner, tf.keras.layers.GroupNormalization)
  assert (inner.groups, outer.groups) == (3, 4)  # largest divisor of 6, 4
  original = model.get_layer("inner").get_layer("inner_bn")
  np.testing.assert_array_equal(inner.gamma.numpy(), original.gamma.numpy())
  np.testing.assert_array_equal(inner.beta.numpy(), original.beta.numpy())
  np.testing.assert_array_equal(converted.get_layer("head").kernel.numpy(),
                                model.get_layer("head").kernel.numpy())
  assert fast.tapped_layers(converted)


def test_channels_first_batch_norm_converts_to_both():
  tf.keras.utils.set_random_seed(2)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(5, input_shape=(4, 3)),
      tf.keras.layers.BatchNormalization(axis=1),
  ])
  _randomize_batch_norms(model, np.random.default_rng(2))
  x = np.random.default_rng(3).normal(size=(2, 4, 3)).astype(np.float32)
  public = convert_batch_norm(model, to="public_batch")
  assert public.layers[1].axis == [1]
  np.testing.assert_allclose(public(x), model(x), atol=1e-5)
  group = convert_batch_norm(model, to="group", groups=2)
  assert (group.layers[1].axis, group.layers[1].groups) == (1, 2)
  # Group statistics are per example: example 0 ignores example 1.
  np.testing.assert_allclose(group(x)[:1], group(x[:1]), atol=1e-6)


def test_frozen_batch_norm_stays_frozen():
  model = _small_model()
  model.get_layer("outer_bn").trainable = False
  converted = convert_batch_norm(model, to="public_batch")
  assert not converted.get_layer("outer_bn").trainable
  assert converted.get_layer("inner").get_layer("inner_bn").trainable


def test_engine_error_names_the_conversion():
  with pytest.raises(fast.UnsupportedLayerError,
                     match="tfdp.layers.convert_batch_norm.*"
                     "PublicBatchNormalization.*GroupNormalization"):
    fast.tapped_layers(_small_model())


class _Block(tf.keras.layers.Layer):

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.norm = tf.keras.layers.BatchNormalization()

  def call(self, inputs):
    return self.norm(inputs)


class _Subclassed(tf.keras.Model):

  def __init__(self):
    super().__init__()
    self.norm = tf.keras.layers.BatchNormalization()

  def call(self, inputs):
    return self.norm(inputs)


def test_errors():
  model = _small_model()
  with pytest.raises(ValueError,
                     match="to must be one of 'group', 'public_batch'"):
    convert_batch_norm(model, to="layer")
  with pytest.raises(ValueError, match="groups must be an integer >= 1"):
    convert_batch_norm(model, groups=0)
  with pytest.raises(ValueError, match="model must be a tf.keras.Model"):
    convert_batch_norm(tf.keras.layers.BatchNormalization())
  subclassed = _Subclassed()
  subclassed(np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match="subclassed model.*BatchNormalization"):
    convert_batch_norm(subclassed)
  custom = tf.keras.Sequential([tf.keras.Input((3,)), _Block(name="block")])
  with pytest.raises(ValueError, match="'block'.*inside its own code"):
    convert_batch_norm(custom)
  two_axes = tf.keras.Sequential([
      tf.keras.Input((4, 3)), tf.keras.layers.BatchNormalization(axis=[1, 2])])
  with pytest.raises(ValueError, match="several axes.*to='public_batch'"):
    convert_batch_norm(two_axes, to="group")
  assert convert_batch_norm(two_axes, to="public_batch").layers[0].axis == [
      1, 2]
  with pytest.raises(ValueError, match="not built"):
    convert_batch_norm(tf.keras.Sequential(
        [tf.keras.layers.BatchNormalization()]))


@pytest.fixture(scope="module")
def resnet18():
  """keras-cv's ResNet-18 backbone (random weights, built offline) at 32x32,
  nested in a classifier."""
  keras_cv = pytest.importorskip("keras_cv")
  tf.keras.utils.set_random_seed(4)
  backbone = keras_cv.models.ResNetBackbone(
      stackwise_filters=[64, 128, 256, 512], stackwise_blocks=[2, 2, 2, 2],
      stackwise_strides=[1, 2, 2, 2], include_rescaling=False,
      input_shape=(32, 32, 3), block_type="basic_block")
  _randomize_batch_norms(backbone, np.random.default_rng(4))
  inputs = tf.keras.Input((32, 32, 3))
  features = tf.keras.layers.GlobalAveragePooling2D()(backbone(inputs))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(10)(features))


def _few_dp_steps(model, public_data=None):
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, 4)
  model = tfdp.make_private(model, public_data=public_data)
  # Eager steps: the same train_step, without minutes of graph building
  # for a 40-layer model on a small CPU.
  model.compile(optimizer=tfdp.optimizers.DPSGD(
      learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0,
      expected_batch_size=2), loss=LOSS, run_eagerly=True)
  before = [v.numpy() for v in model.trainable_variables]
  history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 2 steps
  assert np.all(np.isfinite(history.history["loss"]))
  assert all(not np.array_equal(b, v.numpy())
             for b, v in zip(before, model.trainable_variables))


def test_keras_cv_resnet18_to_public_batch_norm_trains_privately(resnet18):
  converted = convert_batch_norm(resnet18, to="public_batch")
  norms = [l for l in converted.submodules
           if isinstance(l, PublicBatchNormalization)]
  assert len(norms) == 20  # conv1 + 2 per basic block + 3 shortcuts
  assert not any(isinstance(l, tf.keras.layers.BatchNormalization)
                 for l in converted.submodules)
  tapped = fast.tapped_layers(converted)
  assert set(map(id, norms)) <= set(map(id, tapped))
  x = np.random.default_rng(6).normal(size=(2, 32, 32, 3)).astype(np.float32)
  expected = resnet18(x).numpy()
  np.testing.assert_allclose(converted(x), expected, rtol=1e-4,
                             atol=1e-4 * np.abs(expected).max())
  public = np.random.default_rng(7).normal(size=(4, 32, 32, 3))
  _few_dp_steps(converted, public_data=public.astype(np.float32))
  assert all(n.has_public_statistics for n in norms)


def test_keras_cv_resnet18_to_group_norm_trains_privately(resnet18):
  converted = convert_batch_norm(resnet18, to="group")
  groups = [l.groups for l in converted.submodules
            if isinstance(l, tf.keras.layers.GroupNormalization)]
  assert len(groups) == 20 and set(groups) == {32}
  fast.tapped_layers(converted)
  _few_dp_steps(converted)


def test_keras_cv_backbone_given_directly():
  keras_cv = pytest.importorskip("keras_cv")
  backbone = keras_cv.models.ResNetBackbone(
      stackwise_filters=[64], stackwise_blocks=[1], stackwise_strides=[1],
      include_rescaling=False, input_shape=(8, 8, 3),
      block_type="basic_block")
  _randomize_batch_norms(backbone, np.random.default_rng(8))
  converted = convert_batch_norm(backbone, to="public_batch")
  x = np.random.default_rng(9).normal(size=(2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(converted(x), backbone(x), atol=1e-4)
  fast.tapped_layers(converted)
