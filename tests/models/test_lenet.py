"""LeNet-5: shapes, parameter counts by hand, norms, arguments, clipping."""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
import tfdp
from tfdp import models
from tfdp.clipping import fast

NORMS = ("public_batch", "group", "none")
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _conv_params(kernel, inputs, filters, bias=True):
  return kernel * kernel * inputs * filters + (filters if bias else 0)


def _dense_params(inputs, units, bias=True):
  return inputs * units + (units if bias else 0)


def _trainable_count(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _layers_of(model, layer_class):
  return [l for l in model.layers if isinstance(l, layer_class)]


def _norm_layers(model):
  norm_types = (tfdp.layers.PublicBatchNormalization,
                tf.keras.layers.GroupNormalization,
                tf.keras.layers.BatchNormalization,
                tf.keras.layers.LayerNormalization)
  return _layers_of(model, norm_types)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("input_shape,num_classes",
                         [((28, 28, 1), 10), ((8, 8, 1), 10),
                          ((32, 32, 3), 7)])
def test_maps_images_to_logits(norm, input_shape, num_classes):
  model = models.lenet5(norm, input_shape, num_classes)
  assert model.name == "lenet5"
  logits = model(tf.random.normal((3,) + input_shape), training=False)
  assert logits.shape == (3, num_classes)
  assert model.layers[-1].activation is tf.keras.activations.linear
  batch_norm = tf.keras.layers.BatchNormalization
  assert not [l for l in model.layers if l.__class__ is batch_norm]


def test_classic_lenet5_on_mnist_parameter_count_by_hand():
  # conv 5x5 1->6 "same" (28x28), pool (14x14), conv 5x5 6->16 "valid"
  # (10x10), pool (5x5): 400 features, then 120, 84, 10.
  expected = (_conv_params(5, 1, 6) + _conv_params(5, 6, 16) +
              _dense_params(400, 120) + _dense_params(120, 84) +
              _dense_params(84, 10))
  assert expected == 61_706   # LeNet-5's well-known count
  model = models.lenet5("none")
  assert model.count_params() == _trainable_count(model) == 61_706
  assert [l.padding for l in _layers_of(model, tf.keras.layers.Conv2D)] == [
      "same", "valid"]
  assert model.get_layer("flatten").output_shape == (None, 400)
  assert [l.units for l in _layers_of(model, tf.keras.layers.Dense)] == [
      120, 84, 10]
  assert all(l.use_bias for l in _layers_of(model, tf.keras.layers.Conv2D))
  assert not _norm_layers(model)


@pytest.mark.parametrize("norm", ["group", "public_batch"])
def test_normalised_after_each_convolution(norm):
  model = models.lenet5(norm)
  # The convolutions lose their 6 + 16 biases; each normalisation has a
  # scale and an offset per channel.
  assert _trainable_count(model) == 61_706 - 22 + 2 * 22
  names = [l.name for l in _norm_layers(model)]
  assert names == ["conv1_norm", "conv2_norm"]
  assert not any(l.use_bias for l in _layers_of(model, tf.keras.layers.Conv2D))
  assert all(l.use_bias for l in _layers_of(model, tf.keras.layers.Dense))
  layer_types = {"group": tf.keras.layers.GroupNormalization,
                 "public_batch": tfdp.layers.PublicBatchNormalization}
  assert all(isinstance(l, layer_types[norm]) for l in _norm_layers(model))
  # Order inside each stage: conv, norm, activation, pool.
  order = [l.name for l in model.layers]
  assert order.index("conv1") < order.index("conv1_norm") < order.index(
      "conv1_act") < order.index("pool1")


@pytest.mark.parametrize("norm", ["group", "public_batch"])
def test_dense_norm_normalises_the_hidden_dense_layers(norm):
  model = models.lenet5(norm, dense_norm=True)
  assert [l.name for l in _norm_layers(model)] == [
      "conv1_norm", "conv2_norm", "dense1_norm", "dense2_norm"]
  # 120 + 84 dense biases replaced by scale and offset.
  assert _trainable_count(model) == 61_728 - 204 + 2 * 204
  assert [l.use_bias for l in _layers_of(model, tf.keras.layers.Dense)] == [
      False, False, True]


def test_group_norm_groups_divide_the_channels():
  model = models.lenet5("group", dense_norm=True, groups=4)
  groups = [l.groups for l in _layers_of(model,
                                         tf.keras.layers.GroupNormalization)]
  assert groups == [2, 4, 4, 4]   # gcd(4, C) for C = 6, 16, 120, 84
  assert [l.groups for l in _layers_of(
      models.lenet5("group"), tf.keras.layers.GroupNormalization)] == [2, 2]


def test_small_inputs_use_same_padding():
  model = models.lenet5("none", (8, 8, 1))
  assert [l.padding for l in _layers_of(model, tf.keras.layers.Conv2D)] == [
      "same", "same"]
  assert model.get_layer("flatten").output_shape == (None, 2 * 2 * 16)
  assert models.lenet5("none", (28, 28, 1), padding="same").get_layer(
      "flatten").output_shape == (None, 7 * 7 * 16)
  # 12x12 is the smallest input a "valid" second convolution fits.
  assert models.lenet5("none", (12, 12, 1)).get_layer(
      "flatten").output_shape == (None, 16)
  assert models.lenet5("none", (11, 11, 1)).get_layer(
      "conv2").padding == "same"


def test_activation_argument():
  model = models.lenet5("none", activation="tanh")
  acts = [l.activation for l in _layers_of(model, tf.keras.layers.Activation)]
  assert acts == [tf.keras.activations.tanh] * 4


@pytest.mark.parametrize("build,argument", [
    (lambda: models.lenet5("batch"), "norm"),
    (lambda: models.lenet5("none", num_classes=0), "num_classes"),
    (lambda: models.lenet5("group", groups=0), "groups"),
    (lambda: models.lenet5("none", padding="full"), "padding"),
    (lambda: models.lenet5("none", (8, 8, 1), padding="valid"), "padding"),
    (lambda: models.lenet5("none", (3, 3, 1)), "input_shape"),
    (lambda: models.lenet5("none", (28, 28)), "input_shape"),
    (lambda: models.lenet5("none", activation="no_such_thing"), "activation"),
])
def test_bad_arguments_raise_naming_them(build, argument):
  with pytest.raises(ValueError, match=argument):
    build()


def test_unknown_norm_lists_the_choices():
  with pytest.raises(ValueError, match="'public_batch', 'group', 'none'"):
    models.lenet5("layer")


@pytest.mark.parametrize("norm", NORMS)
def test_fast_engine_accepts_every_norm(norm):
  model = models.lenet5(norm, (8, 8, 1), dense_norm=True)
  tapped = fast.tapped_layers(model)
  assert {l.name for l in tapped} == {
      l.name for l in model.layers if l.trainable_weights}


@pytest.mark.parametrize("norm,dense_norm", [
    ("none", False), ("group", False), ("group", True)])
def test_fast_clipped_sum_matches_oracle(norm, dense_norm):
  tf.keras.utils.set_random_seed(3)
  model = models.lenet5(norm, (8, 8, 1), activation="tanh",
                        dense_norm=dense_norm)
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(5, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, 5)
  oracle.assert_fast_engine_matches(model, x, y, LOSS)
