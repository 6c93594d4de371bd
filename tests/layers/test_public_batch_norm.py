"""PublicBatchNormalization: statistics from the public batch only, per-example
independence of the private gradients, the fast engine, saving, errors."""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp
from tfdp.clipping import fast
from tfdp.clipping import registry
from tfdp.clipping.layers import normalization
from tfdp.layers import public_batch_norm
from tfdp.layers import PublicBatchNormalization

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _normal(rng, shape, scale=1.0, shift=0.0):
  return (shift + scale * rng.normal(size=shape)).astype(np.float32)


def _dense_model(norm, seed=0):
  tf.keras.utils.set_random_seed(seed)
  return tf.keras.Sequential([
      tf.keras.layers.Dense(4, activation="tanh", input_shape=(5,)),
      norm,
      tf.keras.layers.Dense(3),
  ])


def _conv_model(norm, seed=0):
  tf.keras.utils.set_random_seed(seed)
  return tf.keras.Sequential([
      tf.keras.layers.Conv2D(3, 3, input_shape=(6, 6, 2)),
      norm,
      tf.keras.layers.Activation("relu"),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3),
  ])


def _clipped_per_example(model, x, y, clip):
  """Clipped per-example gradients from ONE forward pass of the whole batch.

  The Jacobian of the batch's loss vector keeps every interaction between
  examples (as batch statistics create): row j is d loss_j / d weights.
  """
  variables = model.trainable_variables
  with tf.GradientTape() as tape:
    losses = LOSS(y, model(x, training=True))
  jacobians = tape.jacobian(losses, variables)
  flat = np.concatenate([tf.reshape(j, [len(x), -1]).numpy()
                         for j in jacobians], axis=1)
  norms = np.linalg.norm(flat, axis=1, keepdims=True)
  return flat * np.minimum(1.0, clip / norms)


@pytest.mark.parametrize("build", [_dense_model, _conv_model],
                         ids=["dense", "conv"])
@pytest.mark.parametrize("norm, independent", [
    ("public", True), ("keras_batch_norm", False)])
def test_changing_one_example_leaves_the_others_clipped_gradients(
    build, norm, independent):
  rng = np.random.default_rng(0)
  layer = (PublicBatchNormalization() if norm == "public" else
           tf.keras.layers.BatchNormalization())
  model = build(layer)
  shape = model.input_shape[1:]
  x = _normal(rng, (6,) + shape)
  y = rng.integers(0, 3, 6)
  if norm == "public":
    tfdp.layers.update_public_statistics(model, _normal(rng, (8,) + shape))
  before = _clipped_per_example(model, x, y, clip=0.1)
  changed = x.copy()
  changed[2] = _normal(rng, shape, scale=3.0, shift=1.0)
  after = _clipped_per_example(model, changed, y, clip=0.1)
  others = [j for j in range(len(x)) if j != 2]
  assert not np.allclose(before[2], after[2])  # The change is visible.
  unchanged = np.allclose(before[others], after[others], rtol=0, atol=1e-7)
  assert unchanged == independent


@pytest.mark.parametrize("dense_first", [False, True])
def test_statistics_are_the_public_batch_statistics(dense_first):
  rng = np.random.default_rng(1)
  tf.keras.utils.set_random_seed(1)
  layer = PublicBatchNormalization(momentum=0.9)
  stack = [tf.keras.layers.Dense(3, input_shape=(4, 5))] if dense_first else []
  model = tf.keras.Sequential(
      stack + [layer] if dense_first else
      [tf.keras.Input((4, 3)), layer])
  public = _normal(rng, (7, 4, 5 if dense_first else 3), scale=2.0, shift=1.5)
  activations = (model.layers[0](public).numpy() if dense_first
                 else public).astype(np.float64)
  mean, variance = activations.mean(axis=(0, 1)), activations.var(axis=(0, 1))

  tfdp.layers.update_public_statistics(model, public)
  np.testing.assert_allclose(layer.public_mean.numpy(), mean, atol=1e-5)
  np.testing.assert_allclose(layer.public_variance.numpy(), variance,
                             rtol=1e-5)
  np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean,
                             atol=1e-5)
  np.testing.assert_allclose(layer.moving_variance.numpy(),
                             0.9 + 0.1 * variance, rtol=1e-5)

  # A private training call uses them (and changes nothing); so does a
  # tf.function that runs the public pass and then the private call, in
  # that order, on a different public batch.
  private = _normal(rng, (3,) + public.shape[1:])
  inputs = (model.layers[0](private).numpy() if dense_first else private)
  expected = (inputs - mean) / np.sqrt(variance + layer.epsilon)
  np.testing.assert_allclose(model(private, training=True), expected,
                             atol=1e-5)
  np.testing.assert_allclose(layer.public_mean.numpy(), mean, atol=1e-5)

  public2 = public[::-1][:4] * 0.5
  activations2 = (model.layers[0](public2).numpy() if dense_first
                  else public2).astype(np.float64)
  mean2, variance2 = activations2.mean((0, 1)), activations2.var((0, 1))

  @tf.function
  def step():
    tfdp.layers.update_public_statistics(model, public2)
    return model(private, training=True)

  np.testing.assert_allclose(
      step(), (inputs - mean2) / np.sqrt(variance2 + layer.epsilon),
      atol=1e-5)
  np.testing.assert_allclose(layer.public_mean.numpy(), mean2, atol=1e-5)


def test_channels_first_axis_and_inference_uses_moving_averages():
  rng = np.random.default_rng(2)
  layer = PublicBatchNormalization(axis=1, momentum=0.0, center=False,
                                   scale=False)
  model = tf.keras.Sequential([tf.keras.Input((3, 4)), layer])
  public = _normal(rng, (5, 3, 4), shift=2.0)
  tfdp.layers.update_public_statistics(model, public)
  mean = public.astype(np.float64).mean(axis=(0, 2))
  variance = public.astype(np.float64).var(axis=(0, 2))
  np.testing.assert_allclose(layer.public_mean.numpy(), mean, atol=1e-5)
  layer.moving_mean.assign([1.0, 2.0, 3.0])
  layer.moving_variance.assign([4.0, 1.0, 0.25])
  x = _normal(rng, (2, 3, 4))
  expected = ((x - np.array([1.0, 2.0, 3.0])[:, None]) /
              np.sqrt(np.array([4.0, 1.0, 0.25])[:, None] + layer.epsilon))
  np.testing.assert_allclose(model(x), expected, atol=1e-5)
  np.testing.assert_allclose(model(x, training=False), expected, atol=1e-5)
  np.testing.assert_allclose(
      model(x, training=True),
      (x - mean[:, None]) / np.sqrt(variance[:, None] + layer.epsilon),
      atol=1e-5)


def test_the_fast_engine_uses_the_normalization_rule():
  assert isinstance(registry.rule_for(PublicBatchNormalization()),
                    normalization.NormalizationRule)


@pytest.mark.parametrize("build, input_shape", [
    (lambda: _conv_model(PublicBatchNormalization(), seed=3), (6, 6, 2)),
    (lambda: _dense_model(PublicBatchNormalization(), seed=4), (5,)),
], ids=["conv", "dense_rank2"])
def test_fast_engine_matches_the_one_example_oracle(build, input_shape):
  rng = np.random.default_rng(3)
  model = build()
  layer = model.layers[1]
  # Non-trivial affine weights, so that both gradients matter.
  layer.gamma.assign(_normal(rng, layer.gamma.shape, 0.5, 1.0))
  layer.beta.assign(_normal(rng, layer.beta.shape, 0.5))
  tfdp.layers.update_public_statistics(
      model, _normal(rng, (8,) + input_shape, 2.0, 0.5))
  x = _normal(rng, (6,) + input_shape)
  y = rng.integers(0, 3, 6)
  oracle.assert_fast_engine_matches(model, x, y, LOSS)


def test_config_round_trip():
  layer = PublicBatchNormalization(axis=[1, 2], momentum=0.8, epsilon=1e-4,
                                   center=False, gamma_initializer="zeros",
                                   gamma_regularizer="l2", name="pbn")
  config = layer.get_config()
  clone = PublicBatchNormalization.from_config(config)
  assert clone.get_config() == config
  assert tf.keras.layers.deserialize(
      tf.keras.layers.serialize(layer)).get_config() == config


@pytest.mark.parametrize("file_name", ["model.keras", "saved_model"])
def test_save_and_load_keep_predictions(tmp_path, file_name):
  rng = np.random.default_rng(4)
  model = _conv_model(PublicBatchNormalization(momentum=0.5), seed=4)
  tfdp.layers.update_public_statistics(model, _normal(rng, (8, 6, 6, 2),
                                                      2.0, 1.0))
  x = _normal(rng, (3, 6, 6, 2))
  expected = model(x).numpy()
  assert not np.allclose(expected, _conv_model(
      PublicBatchNormalization(), seed=4)(x).numpy())  # Statistics matter.
  model.save(tmp_path / file_name)
  loaded = tf.keras.models.load_model(tmp_path / file_name)
  np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)
  np.testing.assert_allclose(loaded.predict(x, verbose=0), expected,
                             atol=1e-6)
  assert isinstance(loaded.layers[1], PublicBatchNormalization)
  for name in ("moving_mean", "moving_variance", "public_mean",
               "public_variance", "gamma", "beta"):
    np.testing.assert_array_equal(getattr(loaded.layers[1], name).numpy(),
                                  getattr(model.layers[1], name).numpy())


def test_untrained_model_saves_as_saved_model(tmp_path):
  # SavedModel export traces the training call; that is not a training step.
  model = _dense_model(PublicBatchNormalization())
  model.save(tmp_path / "saved_model")
  x = np.ones((2, 5), np.float32)
  np.testing.assert_allclose(
      tf.keras.models.load_model(tmp_path / "saved_model")(x), model(x),
      atol=1e-6)


def test_training_call_without_public_statistics_is_refused():
  model = _dense_model(PublicBatchNormalization(name="pbn"))
  x = np.zeros((2, 5), np.float32)
  with pytest.raises(ValueError, match="'pbn'.*public_data=.*make_private"):
    model(x, training=True)
  with pytest.raises(ValueError, match="update_public_statistics"):
    tf.function(lambda: model(x, training=True))()
  model(x)  # Inference needs no public statistics.


def test_check_public_data_errors():
  check = public_batch_norm.check_public_data
  model = _dense_model(PublicBatchNormalization(name="pbn"))
  with pytest.raises(ValueError, match="'pbn'.*public_data="):
    check(model, None)
  with pytest.raises(ValueError, match="public_data must hold at least 2 "
                     "examples.*got 1"):
    check(model, np.zeros((1, 5)))
  with pytest.raises(ValueError, match="public_data must hold at least 2 "
                     "examples.*got 0"):
    check(model, np.zeros((0, 5)))
  with pytest.raises(ValueError, match="public_data must be a batch"):
    check(model, 1.0)
  plain = _dense_model(tf.keras.layers.LayerNormalization())
  with pytest.raises(ValueError, match="public_data is used only by"):
    check(plain, np.zeros((4, 5)))
  assert check(plain, None) is None
  public = check(model, np.zeros((4, 5), np.float64))
  assert tf.is_tensor(public) and public.dtype == tf.float32


def test_frozen_layer_runs_in_inference_mode_and_needs_no_public_data():
  layer = PublicBatchNormalization()
  model = _dense_model(layer)
  layer.trainable = False
  x = np.ones((2, 5), np.float32)
  np.testing.assert_allclose(model(x, training=True), model(x))
  assert public_batch_norm.check_public_data(model, None) is None
  assert not fast.tapped_layers(model).count(layer)


@pytest.mark.parametrize("kwargs, match", [
    ({"axis": 0}, "axis"), ({"axis": 3}, "axis"), ({"axis": "x"}, "axis"),
    ({"momentum": 1.5}, "momentum"), ({"epsilon": 0.0}, "epsilon"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    PublicBatchNormalization(**kwargs).build((None, 4, 2))
