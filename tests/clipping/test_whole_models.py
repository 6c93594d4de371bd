"""The fast engine on whole models: the benchmark architectures at small
width, and a keras-cv ResNetBackbone nested in a Functional model."""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tfdp import models
from tfdp.clipping import fast

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _check(model, input_shape, batch=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch,) + input_shape).astype(np.float32)
  y = rng.integers(0, 10, batch)
  expected = oracle.per_example_gradients(model, x, y, LOSS)
  norms = oracle.norms(expected)
  clip = float(np.median(norms))
  result = tf.function(lambda: fast.clipped_gradients(model, x, y, LOSS,
                                                      clip))()
  oracle.assert_allclose_relative(result.norms, norms, 1e-5)
  oracle.assert_gradients_close(result.gradient_sum,
                                oracle.clipped_sum(expected, clip), 1e-5)


@pytest.mark.parametrize("build", [
    lambda: models.papernot_cnn((16, 16, 3), width=0.25),
    lambda: models.resnet18((16, 16, 3), width=0.125),
    lambda: models.wide_resnet(16, 1, (16, 16, 3), norm="group"),
], ids=["papernot_cnn", "resnet18_groupnorm", "wrn16_1_groupnorm"])
def test_benchmark_architectures_at_small_width(build):
  tf.keras.utils.set_random_seed(0)
  _check(build(), (16, 16, 3))


def test_keras_cv_backbone_nested_in_a_functional_model():
  keras_cv = pytest.importorskip("keras_cv")
  tf.keras.utils.set_random_seed(1)
  # 16 channels into the strided 1x1 shortcut: the per-example oracle
  # differentiates it with TensorFlow's own kernel, which oneDNN 3.2.1 gets
  # wrong below 16 (tests/clipping/test_onednn_guards.py).
  backbone = keras_cv.models.ResNetBackbone(
      stackwise_filters=[16, 8], stackwise_blocks=[1, 1],
      stackwise_strides=[1, 2], include_rescaling=False,
      input_shape=(12, 12, 3))
  # Its BatchNormalization layers run in inference mode once frozen, which is
  # per-example (issue: PublicBatchNormalization / conversion for training).
  for layer in backbone.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      layer.trainable = False
  inputs = tf.keras.Input((12, 12, 3))
  features = tf.keras.layers.GlobalAveragePooling2D()(backbone(inputs))
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(features))
  _check(model, (12, 12, 3), seed=1)
