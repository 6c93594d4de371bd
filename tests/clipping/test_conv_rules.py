"""Convolution clipping rules against one-example-at-a-time gradients."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tests import scripts
from tfdp.clipping import fast
from tfdp.clipping.layers import _common
from tfdp.clipping.layers import conv
from tfdp.clipping.layers import fallback

RTOL = 1e-5
_CONV_CLASSES = {1: tf.keras.layers.Conv1D, 2: tf.keras.layers.Conv2D,
                 3: tf.keras.layers.Conv3D}


def _loss():
  return tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction=tf.keras.losses.Reduction.NONE)


def _assert_matches_oracle(layer, input_shape, seed, batch=5,
                           in_function=False, spatial_known=True):
  """layer (tanh) -> Flatten -> Dense: fast engine == oracle, some clipped.

  With spatial_known=False the model takes any spatial size and averages
  over positions instead of flattening.
  """
  rng = np.random.default_rng(seed)
  tf.keras.utils.set_random_seed(seed)
  x = rng.normal(size=(batch,) + tuple(input_shape)).astype(np.float32)
  y = rng.integers(0, 3, batch).astype(np.int64)
  if not spatial_known:
    input_shape = (None,) * (len(input_shape) - 1) + tuple(input_shape[-1:])
  head = (tf.keras.layers.Flatten() if spatial_known else
          tf.keras.layers.Lambda(lambda h: tf.reduce_mean(
              h, axis=list(range(1, len(input_shape))))))
  model = tf.keras.Sequential([
      tf.keras.Input(input_shape), layer, head, tf.keras.layers.Dense(3)])
  expected = oracle.per_example_gradients(model, x, y, _loss())
  clip = float(np.median(oracle.norms(expected)))

  def run(x, y):
    return fast.clipped_gradients(model, x, y, _loss(), l2_norm_clip=clip)

  if in_function:  # As in training: traced once, batch size unknown.
    run = tf.function(run, input_signature=[
        tf.TensorSpec((None,) + tuple(input_shape), tf.float32),
        tf.TensorSpec((None,), tf.int64)])
  result = run(x, y)
  oracle.assert_allclose_relative(result.norms, oracle.norms(expected), RTOL)
  for actual, reference in zip(result.gradient_sum,
                               oracle.clipped_sum(expected, clip)):
    oracle.assert_allclose_relative(actual, reference, RTOL)


@pytest.fixture(name="force_path")
def _force_path(monkeypatch):
  """Makes the rule take the given path; counts `prefer_ghost_norm`'s asks.

  Paths: "ghost"; "explicit" (per-example gradients kept for the clipped
  sum); "explicit-recomputed" (explicit norms, clipped sum from one
  weight-gradient pass).
  """
  asked = []

  def force(path):
    def prefer_ghost_norm(*args, **kwargs):
      del args, kwargs
      asked.append(path)
      return path == "ghost"

    monkeypatch.setattr(_common, "prefer_ghost_norm", prefer_ghost_norm)
    monkeypatch.setattr(_common, "keep_per_example_gradients",
                        lambda *args: path == "explicit")
    return asked

  return force


def _conv_configs(rank, seed):
  """Four seeded random Conv configurations covering the features.

  Config n is strided (n even) or dilated (n odd: Keras refuses strides > 1
  together with dilation > 1), grouped for n in (1, 2), biased unless n = 1;
  paddings as listed; kernel and input sizes random.
  """
  rng = np.random.default_rng(seed)
  paddings = (["valid", "same", "causal", "causal"] if rank == 1 else
              ["valid", "same", "same", "valid"])
  max_size = {1: 9, 2: 8, 3: 6}[rank]
  configs = []
  for n, padding in enumerate(paddings):
    groups = 2 if n in (1, 2) else 1
    varied = [int(v) for v in rng.integers(1, 4 if n % 2 == 0 else 3, rank)]
    varied[int(rng.integers(rank))] = 2  # At least one axis strided/dilated.
    ones = [1] * rank
    configs.append(dict(
        rank=rank,
        kwargs=dict(filters=groups * int(rng.integers(1, 4)),
                    kernel_size=tuple(int(k) for k in rng.integers(2, 4, rank)),
                    strides=tuple(ones if n % 2 else varied),
                    dilation_rate=tuple(varied if n % 2 else ones),
                    groups=groups, padding=padding, use_bias=n != 1,
                    activation="tanh"),
        input_shape=tuple(int(m) for m in rng.integers(5, max_size + 1, rank))
        + (groups * int(rng.integers(1, 3)),)))
  return configs


@pytest.fixture(name="force_way")
def _force_way(monkeypatch):
  """Makes the explicit path compute G_i one way.

  "folded": `_folded_per_example_gradients` for Conv1D and Conv2D (whatever
  `_folding_works` would say; TensorFlow's oneDNN has no grouped Conv3D, so
  Conv3D is left to the check, which refuses it); "one_by_one": folding
  refused, so one filter gradient per example for groups = 1 (grouped
  layers then take the views); "views": the per-offset views for every
  layer.

  Where this TensorFlow cannot take the filter gradient of a grouped
  convolution (its own CPU kernels, used where oneDNN is off: by default on
  CPUs without AVX512_VNNI, AVX512_BF16 or AMX), nothing can run folded.
  "folded" then leaves the check in place, and the test's end asserts that
  it refused whatever it checked (1x1 kernels are not checked), so the
  exact results the test checks came from the other ways.
  """
  monkeypatch.setattr(conv, "_FOLDING_CHECKS", {})
  refusal_expected = []

  def force(way, rank):
    if way == "views":
      monkeypatch.setattr(conv, "_per_example_way", lambda *args: None)
    elif way == "one_by_one":
      monkeypatch.setattr(conv, "_folding_works", lambda *args: False)
    elif rank < 3:
      if _grouped_convolutions_run():
        monkeypatch.setattr(conv, "_folding_works", lambda *args: True)
      else:
        refusal_expected.append(True)

  yield force
  if refusal_expected:
    # pylint: disable=protected-access
    assert not any(conv._FOLDING_CHECKS.values()), conv._FOLDING_CHECKS


_PATHS = ["explicit", "explicit-recomputed", "ghost"]
_WAYS = ["folded", "one_by_one", "views"]
_CONFIGS = [c for rank in (1, 2, 3) for c in _conv_configs(rank, rank)]


def _config_id(config):
  k = config["kwargs"]
  return (f"{config['rank']}d-k{k['kernel_size']}-s{k['strides']}"
          f"-d{k['dilation_rate']}-g{k['groups']}-{k['padding']}"
          f"-bias{int(k['use_bias'])}-in{config['input_shape']}")


@pytest.mark.parametrize("path", _PATHS)
@pytest.mark.parametrize("config", _CONFIGS, ids=_config_id)
def test_conv_matches_oracle(config, path, force_path):
  asked = force_path(path)
  layer = _CONV_CLASSES[config["rank"]](**config["kwargs"])
  _assert_matches_oracle(layer, config["input_shape"], seed=0)
  assert asked == [path], "the rule did not consult prefer_ghost_norm once"


@pytest.mark.parametrize("way", _WAYS)
@pytest.mark.parametrize("path", ["explicit", "explicit-recomputed"])
@pytest.mark.parametrize("config", _CONFIGS, ids=_config_id)
def test_conv_explicit_ways_match_oracle(config, path, way, force_path,
                                         force_way):
  force_path(path)
  force_way(way, config["rank"])
  layer = _CONV_CLASSES[config["rank"]](**config["kwargs"])
  _assert_matches_oracle(layer, config["input_shape"], seed=0)


@pytest.mark.parametrize("path", _PATHS)
def test_conv_inside_tf_function(path, force_path):
  force_path(path)
  layer = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same",
                                 activation="tanh")
  # T = 3 x 2 output positions <= 6 channels: the ghost norm's Gram goes
  # offset by offset (the random configurations take the im2col branch).
  _assert_matches_oracle(layer, (5, 4, 6), seed=7, in_function=True)


@pytest.mark.parametrize("way", _WAYS)
@pytest.mark.parametrize("in_function", [False, True])
@pytest.mark.parametrize("path", ["explicit", "explicit-recomputed"])
@pytest.mark.parametrize("config", _CONFIGS, ids=_config_id)
def test_conv_in_sub_batches_matches_oracle(config, path, in_function, way,
                                            force_path, force_way,
                                            monkeypatch):
  # Sub-batches of 2 examples for a batch of 5: a loop of 3, the last one
  # repeating example 5 (the sizes the rule picks exceed the test batches).
  force_path(path)
  force_way(way, config["rank"])
  monkeypatch.setattr(conv, "_sub_batch_size", lambda *args: 2)
  monkeypatch.setattr(conv, "_folded_sub_batch_size", lambda *args: 2)
  layer = _CONV_CLASSES[config["rank"]](**config["kwargs"])
  _assert_matches_oracle(layer, config["input_shape"], seed=1,
                         in_function=in_function)


def test_sub_batches_fit_the_set_bytes():
  # pylint: disable=protected-access
  size = lambda batch, x_shape, d_shape: conv._sub_batch_size(
      tf.keras.Input(x_shape, batch_size=batch),
      tf.keras.Input(d_shape, batch_size=batch))
  per_example = 4 * (32 * 32 * 32 + 32 * 32 * 64)
  expected = conv.SUB_BATCH_BYTES // per_example
  assert size(128, (32, 32, 32), (32, 32, 64)) == expected > 0
  # A batch of unknown size counts as 128 examples.
  assert size(None, (32, 32, 32), (32, 32, 64)) == expected
  # Whole when the batch fits in 4 sub-batches, or the shape is unknown.
  assert size(4 * expected, (32, 32, 32), (32, 32, 64)) == 0
  assert size(128, (8, 8, 3), (8, 8, 16)) == 0
  assert size(128, (None, None, 3), (None, None, 16)) == 0
  assert size(8, (512, 512, 64), (512, 512, 64)) == 1


def _folding_check(layer, input_shape):
  """`conv._folding_works` for a built layer and one example's shape."""
  layer.build((None,) + input_shape)
  output_shape = layer.compute_output_shape((1,) + input_shape)[1:]
  return conv._folding_works(  # pylint: disable=protected-access
      layer, layer.call, {}, layer.strides, tf.TensorShape(input_shape),
      tf.TensorShape(output_shape), tf.float32)


@pytest.mark.parametrize("failure", ["wrong", "refused"])
def test_folding_is_refused_where_grouped_convolutions_fail(failure,
                                                            monkeypatch):
  # The check compares the folded gradients with one-example ones: a device
  # whose grouped convolution errs or computes something else is not used.
  monkeypatch.setattr(conv, "_FOLDING_CHECKS", {})
  folded = conv._folded_per_example_gradients  # pylint: disable=protected-access

  def broken(*args, **kwargs):
    if failure == "refused":
      raise tf.errors.InvalidArgumentError(None, None, "no grouped kernel")
    gradients = folded(*args, **kwargs)
    return gradients + 1e-2 * tf.reduce_max(tf.abs(gradients))

  layer = tf.keras.layers.Conv2D(4, 3, padding="same", groups=2)
  monkeypatch.setattr(conv, "_folded_per_example_gradients", broken)
  assert not _folding_check(layer, (6, 5, 4))
  monkeypatch.setattr(conv, "_folded_per_example_gradients", folded)
  monkeypatch.setattr(conv, "_FOLDING_CHECKS", {})
  # The check itself is not what refuses: the same layer folds correctly
  # here unless the device cannot (TensorFlow's own CPU kernels).
  assert _folding_check(layer, (6, 5, 4)) == _grouped_convolutions_run()


def _grouped_convolutions_run() -> bool:
  """Whether this TensorFlow takes a grouped convolution's filter gradient.

  oneDNN and cuDNN do; TensorFlow's own CPU kernels compute the grouped
  forward pass but refuse its gradients.
  """
  kernel = tf.ones([3, 3, 2, 4])
  try:
    with tf.GradientTape() as tape:
      tape.watch(kernel)
      outputs = tf.nn.convolution(tf.ones([1, 4, 4, 4]), kernel,
                                  padding="SAME")
    tape.gradient(outputs, kernel)
    return True
  except tf.errors.OpError:
    return False


def test_without_onednn_folding_is_refused_and_exact():
  # TensorFlow's own CPU kernels refuse grouped convolutions' gradients: the
  # check must refuse folding everywhere; a layer with groups = 1 then takes
  # one filter gradient per example, a grouped one the per-offset views, and
  # both are exact.
  script = """
import tfdp
import tensorflow as tf
from tests.clipping import test_conv_rules as t
from tfdp.clipping.layers import conv
one_by_one = conv._one_by_one_per_example_gradients
calls = []
conv._one_by_one_per_example_gradients = (
    lambda *args: calls.append(1) or one_by_one(*args))
for groups, used in ((1, True), (3, False)):
  calls.clear()
  layer = tf.keras.layers.Conv2D(6, 3, strides=2, padding="same",
                                 groups=groups, activation="tanh")
  t._assert_matches_oracle(layer, (7, 6, 3), seed=4, in_function=True)
  assert bool(calls) == used, (groups, calls)
assert conv._FOLDING_CHECKS and not any(conv._FOLDING_CHECKS.values())
print("folding refused, exact")
"""
  result = scripts.run_python(script, env={"TF_ENABLE_ONEDNN_OPTS": "0"},
                              timeout=300)
  assert "folding refused, exact" in result.stdout, result.stderr[-3000:]


def test_depthwise_inside_tf_function():
  layer = tf.keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same",
                                          depth_multiplier=2,
                                          activation="tanh")
  _assert_matches_oracle(layer, (7, 6, 2), seed=12, in_function=True)


def test_conv_with_unknown_spatial_size_inside_tf_function():
  """Padding from dynamic sizes; T unknown, so the explicit path."""
  layer = tf.keras.layers.Conv2D(3, 3, strides=2, padding="same",
                                 activation="tanh")
  _assert_matches_oracle(layer, (7, 6, 2), seed=13, in_function=True,
                         spatial_known=False)


def test_conv_with_extra_batch_axis():
  """Leading axes beyond the batch count as output positions."""
  layer = tf.keras.layers.Conv2D(3, 2, padding="same", activation="tanh")
  _assert_matches_oracle(layer, (2, 5, 6, 2), seed=8)


@pytest.mark.parametrize("kwargs,input_shape", [
    (dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2),
     (7, 8, 3)),
    (dict(kernel_size=(2, 3), dilation_rate=2, padding="valid",
          use_bias=False), (8, 7, 2)),
    (dict(kernel_size=(3, 1), strides=3, padding="same", depth_multiplier=3),
     (6, 9, 2)),
])
def test_depthwise_conv2d_matches_oracle(kwargs, input_shape):
  layer = tf.keras.layers.DepthwiseConv2D(activation="tanh", **kwargs)
  _assert_matches_oracle(layer, input_shape, seed=9)


def test_depthwise_conv1d_matches_oracle():
  layer = tf.keras.layers.DepthwiseConv1D(3, dilation_rate=2, padding="same",
                                          depth_multiplier=2,
                                          activation="tanh")
  _assert_matches_oracle(layer, (9, 3), seed=10)


@pytest.mark.parametrize("make_layer,input_shape", [
    (lambda: tf.keras.layers.Conv2DTranspose(3, 3, strides=2,
                                             activation="tanh"), (4, 5, 2)),
    (lambda: tf.keras.layers.SeparableConv2D(3, 3, depth_multiplier=2,
                                             activation="tanh"), (6, 5, 2)),
])
def test_transpose_and_separable_take_the_exact_fallback(make_layer,
                                                         input_shape, caplog):
  layer = make_layer()
  with caplog.at_level(logging.WARNING):
    _assert_matches_oracle(layer, input_shape, seed=11)
  assert layer.name in caplog.text and "exact per-example" in caplog.text


def test_channels_first_is_refused_with_reason():
  model = tf.keras.Sequential([
      tf.keras.Input((2, 5, 5)),
      tf.keras.layers.Conv2D(2, 3, data_format="channels_first",
                             name="nchw_conv"),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
  x, y = np.zeros((2, 2, 5, 5), np.float32), np.zeros(2, np.int64)
  with pytest.raises(fallback.UnsupportedLayerError,
                     match="nchw_conv.*channels_last"):
    fast.clipped_gradients(model, x, y, _loss(), 1.0)


def test_offset_views_match_extract_patches():
  """The shifted slices are the im2col patches, SAME padding included."""
  layer = tf.keras.layers.Conv2D(1, (3, 2), strides=(2, 1), padding="same")
  x = tf.random.stateless_normal([2, 7, 6, 3], seed=[1, 2])
  z = layer(x)
  views = list(conv.kernel_offset_views(layer, x, z))
  patches = tf.image.extract_patches(x, [1, 3, 2, 1], [1, 2, 1, 1],
                                     [1, 1, 1, 1], "SAME")
  expected = tf.reshape(patches, [2, -1, 6, 3])  # offsets row-major, then C
  np.testing.assert_array_equal(tf.stack(views, axis=2), expected)


# 1x1 kernels with strides run as stride 1 on the subsampled input
# (test_onednn_guards.py). 16 input channels: the oracle differentiates the
# strided op itself, which TF 2.15.1's oneDNN gets wrong below 16.
@pytest.mark.parametrize("path", _PATHS)
@pytest.mark.parametrize("layer,input_shape", [
    (lambda: tf.keras.layers.Conv1D(3, 1, strides=2, padding="causal"),
     (9, 16)),
    (lambda: tf.keras.layers.Conv2D(4, 1, strides=(3, 2), groups=2),
     (7, 8, 16)),
    (lambda: tf.keras.layers.Conv3D(2, 1, strides=(2, 1, 2), padding="same"),
     (5, 3, 4, 16)),
], ids=["conv1d-causal", "conv2d-grouped", "conv3d"])
def test_strided_pointwise_matches_oracle(layer, input_shape, path,
                                          force_path):
  force_path(path)
  _assert_matches_oracle(layer(), input_shape, seed=3, in_function=True)
