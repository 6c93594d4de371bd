"""tfdp never runs the two oneDNN patterns that crash TensorFlow 2.15.1.

1. The filter gradient of a 1x1 convolution with stride > 1 on fewer than 16
   input channels (oneDNN issue 6035: an abort on AVX-512 CPUs, wrong
   gradients on AVX2 ones). The conv rule runs such a layer as a stride-1
   convolution of the subsampled input, and tfdp's models build their
   strided shortcuts that way (tfdp.layers.Subsample). Checked on the graphs
   (no such op, whatever the CPU), on the numbers (against a float64 numpy
   reference, which no oneDNN kernel computes), and in a fresh process.
2. Concurrent FusedBatchNormV3 calls (Keras' LayerNormalization) of
   different row counts: gradient accumulation runs one chunk at a time.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tests import scripts
import tfdp
from tfdp.clipping import fast

_FILTER_GRADIENTS = ("Conv2DBackpropFilter", "Conv3DBackpropFilterV2")


def _operations(graph):
  """Every op of `graph` and of the functions it calls (loop bodies...)."""
  for op in graph.get_operations():
    yield op
  for function in graph._functions.values():  # pylint: disable=protected-access
    yield from _operations(function.graph)


def _strided_pointwise_filter_gradients(graph):
  """The 1x1, stride > 1, < 16 input channel filter-gradient ops."""
  found = []
  for op in _operations(graph):
    if op.type not in _FILTER_GRADIENTS:
      continue
    kernel = op.outputs[0].shape
    spatial = kernel[:-2]
    if (spatial.is_fully_defined() and all(k == 1 for k in spatial) and
        max(op.get_attr("strides")) > 1 and
        (kernel[-2] is None or kernel[-2] < 16)):
      found.append(op.name)
  return found


def _train_step_graph(model, input_shape):
  step = tf.function(lambda x, y: model.train_step((x, y)))
  return step.get_concrete_function(
      tf.TensorSpec((None,) + input_shape),
      tf.TensorSpec([None], tf.int64)).graph


def _compiled(model, optimizer):
  model.compile(optimizer=optimizer,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True, reduction="none"))
  return model


def _dp_sgd():
  return tfdp.optimizers.DPSGD(learning_rate=0.1, l2_norm_clip=1.0,
                               noise_multiplier=1.0, expected_batch_size=8)


def _pointwise_model(channels=8, strides=2, padding="same", activation=None):
  return tf.keras.Sequential([
      tf.keras.layers.Conv2D(5, 1, strides=strides, padding=padding,
                             activation=activation,
                             input_shape=(9, 8, channels)),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3)])


def test_detector_finds_the_pattern_in_a_plain_keras_model():
  # Plain Keras training of such a layer does run the faulty kernel (the
  # README tells users); the check below would see it.
  model = _compiled(_pointwise_model(), tf.keras.optimizers.SGD(0.1))
  assert _strided_pointwise_filter_gradients(
      _train_step_graph(model, (9, 8, 8)))


@pytest.mark.parametrize("physical_batch_size", [None, 3])
def test_private_train_step_has_no_strided_pointwise_filter_gradient(
    physical_batch_size):
  model = _compiled(tfdp.make_private(
      _pointwise_model(), physical_batch_size=physical_batch_size), _dp_sgd())
  assert not _strided_pointwise_filter_gradients(
      _train_step_graph(model, (9, 8, 8)))


@pytest.mark.parametrize("private", [False, True])
def test_tfdp_resnet_has_no_strided_pointwise_filter_gradient(private):
  model = tfdp.models.resnet18((16, 16, 3), width=0.125)
  assert any(isinstance(layer, tfdp.layers.Subsample)
             for layer in model.layers)
  if private:
    model = _compiled(tfdp.make_private(model), _dp_sgd())
  else:
    model = _compiled(model, tf.keras.optimizers.SGD(0.1))
  assert not _strided_pointwise_filter_gradients(
      _train_step_graph(model, (16, 16, 3)))


def test_accumulation_runs_one_chunk_at_a_time():
  model = _compiled(tfdp.make_private(
      tf.keras.Sequential([
          tf.keras.layers.Dense(4, input_shape=(3,)),
          tf.keras.layers.LayerNormalization(),
          tf.keras.layers.Dense(2)]), physical_batch_size=4), _dp_sgd())
  loops = [op for op in _operations(_train_step_graph(model, (3,)))
           if op.type in ("While", "StatelessWhile")]
  assert loops
  assert all(op.get_attr("parallel_iterations") == 1 for op in loops)


def _numpy_per_example_gradients(model, x, y, strides):
  """float64 numpy backprop of 1x1 conv (tanh) -> flatten -> dense -> CE."""
  kernel, bias, dense_kernel, dense_bias = [
      w.astype(np.float64) for w in model.get_weights()]
  gradients = []
  for xi, yi in zip(x.astype(np.float64), y):
    sub = xi[::strides[0], ::strides[1], :]  # What a 1x1 kernel reads.
    a = np.tanh(sub @ kernel[0, 0] + bias)
    logits = a.reshape(-1) @ dense_kernel + dense_bias
    p = np.exp(logits - logits.max())
    p /= p.sum()
    dlogits = p - np.eye(len(p))[yi]
    da = (dense_kernel @ dlogits).reshape(a.shape)
    dz = da * (1 - a**2)
    gradients.append([
        np.einsum("hwc,hwo->co", sub, dz)[None, None], dz.sum(axis=(0, 1)),
        np.outer(a.reshape(-1), dlogits), dlogits])
  return gradients


@pytest.mark.parametrize("strides,padding", [((2, 2), "same"),
                                             ((3, 2), "valid")])
def test_conv_rule_exact_on_strided_pointwise_convs(strides, padding):
  rng = np.random.default_rng(0)
  loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                       reduction="none")
  for channels in range(1, 16):
    tf.keras.utils.set_random_seed(channels)
    model = _pointwise_model(channels, strides, padding, activation="tanh")
    x = rng.normal(size=(4, 9, 8, channels)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    expected = _numpy_per_example_gradients(model, x, y, strides)
    clip = float(np.median(oracle.norms(expected)))
    result = fast.clipped_gradients(model, x, y, loss, clip)
    oracle.assert_allclose_relative(result.norms, oracle.norms(expected), 1e-5)
    oracle.assert_gradients_close(result.gradient_sum,
                                  oracle.clipped_sum(expected, clip), 1e-5)


def test_reproducers_run_in_a_fresh_process():
  results = scripts.run_json_script(
      pathlib.Path(__file__).with_name("onednn_reproducers.py"), timeout=600)
  assert results["pointwise_filter_gradient_sum"] == 8192.0
  assert all(np.isfinite(v) for v in results["resnet_losses"].values())
  assert results["layer_norm_accumulation_error"] < 1e-5
