"""Architectures: shapes, parameter counts, normalisation choices, arguments."""

import functools

import pytest
import tensorflow as tf

from tfdp import layers
from tfdp import models
from tfdp.clipping import registry


def _conv_params(kernel, inputs, filters, bias=True):
  return kernel * kernel * inputs * filters + (filters if bias else 0)


def _layers_of(model, layer_class):
  return [l for l in model.layers if isinstance(l, layer_class)]


SMALL_BUILDERS = {
    "papernot_cnn": lambda **kw: models.papernot_cnn(width=0.25, **kw),
    "resnet18": lambda **kw: models.resnet18(width=0.125, **kw),
    "wide_resnet": lambda **kw: models.wide_resnet(depth=10, width_factor=1,
                                                   **kw),
}


@functools.lru_cache(maxsize=None)
def _small(name, norm="group"):
  """Small models on 32x32x3 inputs, built once per test session."""
  if name == "papernot_cnn":
    return SMALL_BUILDERS[name]()
  return SMALL_BUILDERS[name](norm=norm)


@pytest.mark.parametrize("name", sorted(SMALL_BUILDERS))
@pytest.mark.parametrize("input_shape,num_classes",
                         [((32, 32, 3), 10), ((28, 28, 1), 7)])
def test_small_models_map_images_to_logits(name, input_shape, num_classes):
  if input_shape == (32, 32, 3):
    model = _small(name)
  else:
    model = SMALL_BUILDERS[name](input_shape=input_shape,
                                 num_classes=num_classes)
  logits = model(tf.random.normal((3,) + input_shape), training=True)
  assert logits.shape == (3, num_classes)
  assert model.layers[-1].activation is tf.keras.activations.linear
  assert not _layers_of(model, tf.keras.layers.BatchNormalization)


def test_papernot_cnn_parameter_count_by_hand():
  channels = [3, 32, 32, 64, 64, 128, 128]
  convs = sum(_conv_params(3, c_in, c_out)
              for c_in, c_out in zip(channels, channels[1:]))
  # Three 2x2 pools: 32 -> 4, so the flattened features are 4 * 4 * 128.
  dense = (4 * 4 * 128) * 128 + 128 + 128 * 10 + 10
  assert convs + dense == 550_570
  model = models.papernot_cnn()
  assert model.count_params() == 550_570
  assert model.output_shape == (None, 10)
  assert [l.filters for l in _layers_of(model, tf.keras.layers.Conv2D)] == (
      channels[1:])
  assert all(l.padding == "same" and l.activation is tf.keras.activations.tanh
             for l in _layers_of(model, tf.keras.layers.Conv2D))


def test_papernot_cnn_width_and_activation():
  model = models.papernot_cnn(width=0.5, activation="relu")
  assert [l.filters for l in _layers_of(model, tf.keras.layers.Conv2D)] == [
      16, 16, 32, 32, 64, 64]
  assert model.get_layer("dense").units == 64
  assert model.get_layer("dense").activation is tf.keras.activations.relu


def test_resnet18_full_size_matches_published_count():
  model = models.resnet18()
  # The CIFAR ResNet-18 with BatchNorm has 11,173,962 trainable parameters;
  # GroupNorm has the same gamma and beta.
  assert model.count_params() == 11_173_962
  assert model.output_shape == (None, 10)
  convs = _layers_of(model, tf.keras.layers.Conv2D)
  assert len(convs) == 1 + 8 * 2 + 3   # stem, 8 blocks, 3 projections
  assert sorted({c.filters for c in convs}) == [64, 128, 256, 512]
  assert not _layers_of(model, tf.keras.layers.MaxPooling2D)
  assert not _layers_of(model, tf.keras.layers.BatchNormalization)
  # 32x32 -> 4x4 after three stride-2 stages.
  assert model.get_layer("pool").input_shape == (None, 4, 4, 512)


def test_wrn_16_4_full_size_matches_published_count():
  model = models.wide_resnet(depth=16, width_factor=4)
  assert model.count_params() == 2_748_890   # ~2.7M in the WRN paper
  convs = _layers_of(model, tf.keras.layers.Conv2D)
  assert len(convs) == 1 + 6 * 2 + 3   # stem, 6 blocks, 3 projections
  assert sorted({c.filters for c in convs}) == [16, 64, 128, 256]
  assert model.get_layer("pool").input_shape == (None, 8, 8, 256)
  assert not _layers_of(model, tf.keras.layers.BatchNormalization)


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet"])
def test_group_norm_choice(name):
  model = _small(name, "group")
  norms = _layers_of(model, tf.keras.layers.GroupNormalization)
  assert norms
  for layer in norms:
    channels = layer.input_shape[-1]
    assert channels % layer.groups == 0 and layer.groups > 1
  assert not any(c.use_bias for c in _layers_of(model, tf.keras.layers.Conv2D))


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet"])
def test_no_norm_choice(name):
  model = _small(name, "none")
  assert not _layers_of(model, tf.keras.layers.GroupNormalization)
  assert not _layers_of(model, tf.keras.layers.LayerNormalization)
  assert not _layers_of(model, tf.keras.layers.BatchNormalization)
  assert all(c.use_bias for c in _layers_of(model, tf.keras.layers.Conv2D))


def test_weight_standardised_wrn_uses_the_ws_layer_with_its_rule():
  model = models.wide_resnet(depth=10, width_factor=1, groups=4,
                             weight_standardization=True)
  convs = _layers_of(model, tf.keras.layers.Conv2D)
  assert convs and all(isinstance(c, layers.WeightStandardizedConv2D)
                       for c in convs)
  assert model.count_params() == models.wide_resnet(
      depth=10, width_factor=1, groups=4).count_params()
  assert {type(registry.rule_for(c)).__name__ for c in convs} == {
      "WeightStandardizedConvRule"}


def test_group_count_follows_argument():
  model = models.wide_resnet(depth=10, width_factor=1, groups=4)
  assert {l.groups for l in _layers_of(
      model, tf.keras.layers.GroupNormalization)} == {4}


def test_every_trainable_layer_is_clippable():
  clippable = (tf.keras.layers.Conv2D, tf.keras.layers.Dense,
               tf.keras.layers.GroupNormalization)
  for name in SMALL_BUILDERS:
    model = _small(name)
    for layer in model.layers:
      if layer.trainable_weights:
        assert isinstance(layer, clippable), layer.name


@pytest.mark.parametrize("build,argument", [
    (lambda: models.resnet18(norm="batch"), "norm"),
    (lambda: models.wide_resnet(norm="layer"), "norm"),
    (lambda: models.resnet18(width=0), "width"),
    (lambda: models.resnet18(groups=0), "groups"),
    (lambda: models.resnet18(num_classes=0), "num_classes"),
    (lambda: models.wide_resnet(depth=15), "depth"),
    (lambda: models.wide_resnet(depth=4), "depth"),
    (lambda: models.wide_resnet(width_factor=-1), "width_factor"),
    (lambda: models.papernot_cnn(width=-0.5), "width"),
    (lambda: models.papernot_cnn(num_classes=1.5), "num_classes"),
    (lambda: models.papernot_cnn(activation="no_such_thing"), "activation"),
])
def test_bad_arguments_raise_naming_them(build, argument):
  with pytest.raises(ValueError, match=argument):
    build()


def test_unknown_norm_lists_the_choices():
  with pytest.raises(ValueError, match="'group'.*'none'"):
    models.resnet18(norm="batch")
