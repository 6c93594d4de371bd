"""tfdp.layers.Subsample: x[:, ::s_1, ..., ::s_r, :], a Keras layer."""

import numpy as np
import pytest
import tensorflow as tf

from tfdp import layers


@pytest.mark.parametrize("strides, shape", [((2, 2), (3, 7, 8, 2)),
                                            ((3,), (2, 10, 4)),
                                            ((2, 1, 3), (1, 5, 4, 7, 3))])
def test_keeps_every_stride_th_position(strides, shape):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  index = (slice(None),) + tuple(slice(None, None, s) for s in strides) + (
      slice(None),)
  layer = layers.Subsample(strides)
  np.testing.assert_array_equal(layer(x).numpy(), x[index])
  assert layer.compute_output_shape(shape) == x[index].shape


def test_subsample_then_pointwise_conv_is_the_strided_conv():
  x = np.random.default_rng(1).normal(size=(2, 9, 8, 3)).astype(np.float32)
  strided = tf.keras.layers.Conv2D(4, 1, strides=2, padding="same")
  expected = strided(x)
  pointwise = tf.keras.layers.Conv2D(4, 1)
  pointwise.build(x.shape)
  pointwise.set_weights(strided.get_weights())
  np.testing.assert_allclose(pointwise(layers.Subsample((2, 2))(x)),
                             expected, rtol=1e-6)


def test_saves_and_loads_with_the_model(tmp_path):
  inputs = tf.keras.Input((8, 8, 3))
  model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(2, 1)(
      layers.Subsample((2, 2), name="sub")(inputs)))
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  assert loaded.get_layer("sub").strides == (2, 2)
  x = np.ones((1, 8, 8, 3), np.float32)
  np.testing.assert_allclose(loaded(x), model(x))


def test_bad_strides_are_named():
  with pytest.raises(ValueError, match="strides"):
    layers.Subsample((2, 0))
