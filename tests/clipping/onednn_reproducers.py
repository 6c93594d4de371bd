"""Run as a script: the two oneDNN crash patterns, through tfdp's own paths.

TensorFlow 2.15.1's oneDNN (3.2.1) aborts the process on AVX-512 CPUs (and
can return wrong numbers on AVX2 ones) in two patterns tfdp used to hit:

1. the filter gradient of a 1x1 convolution with stride > 1 on fewer than 16
   input channels (oneDNN issue 6035); the minimal reproducer is input
   ones [1, 16, 16, 8], 16 filters, stride 2, out_backprop ones, whose
   filter gradient sums to 8 * 8 * 16 * 8 = 8192;
2. two LayerNormalization (FusedBatchNormV3) calls with different row counts
   in flight at once: a full chunk and the ragged last chunk of
   `make_private(physical_batch_size=...)`.

tests/clipping/test_onednn_guards.py runs this in a fresh process, so that an
abort fails that test instead of killing the test runner; the results are
checked here against exact values and printed as one JSON line.
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

import tfdp
from tfdp.clipping import fast

SUM_LOSS = lambda y, z: tf.reduce_sum(z, axis=[1, 2, 3])  # dL/dz = 1


def pointwise_filter_gradient() -> float:
  """The reproducer's filter gradient, as tfdp's conv rule computes it."""
  conv = tf.keras.layers.Conv2D(16, 1, strides=2, padding="same",
                                use_bias=False, input_shape=(16, 16, 8))
  model = tf.keras.Sequential([conv])
  x = tf.ones([1, 16, 16, 8])
  # A clip norm above the gradient's norm: the clipped sum is the gradient.
  result = tf.function(lambda: fast.clipped_gradients(
      model, x, tf.zeros([1]), SUM_LOSS, l2_norm_clip=1e6))()
  return float(tf.reduce_sum(result.gradient_sum[0]))


def _compile(model, optimizer):
  model.compile(optimizer=optimizer,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True, reduction="none"))
  return model


def _dp_sgd(batch):
  return tfdp.optimizers.DPSGD(learning_rate=0.05, l2_norm_clip=1.0,
                               noise_multiplier=0.0, expected_batch_size=batch)


def resnet_losses(rng) -> dict:
  """tfdp's ResNet-18 at width 1/8 (8-channel shortcuts) trained 3 steps."""
  x = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)
  y = rng.integers(0, 10, 16)
  losses = {}
  for name, private in (("plain", False), ("private", True)):
    tf.keras.utils.set_random_seed(0)
    model = tfdp.models.resnet18((16, 16, 3), width=0.125)
    if private:
      model = _compile(tfdp.make_private(model), _dp_sgd(8))
    else:
      model.compile(optimizer=tf.keras.optimizers.SGD(0.05),
                    loss=tf.keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True))
    history = model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=2,
                        verbose=0)
    losses[name] = history.history["loss"][-1]
  return losses


def layer_norm_accumulation(rng) -> float:
  """Max |weights| difference, chunks of 16 against one chunk, 18 steps.

  Dense-LayerNorm-Dense on Poisson batches of about 50 (ragged last chunks
  throughout), no noise: accumulation must not change the clipped sums.
  """
  x = rng.normal(size=(300, 12)).astype(np.float32)
  y = rng.integers(0, 3, 300)
  batches = tfdp.data.poisson_batches(x, y, expected_batch_size=50,
                                      steps_per_epoch=6, seed=0)
  # The same 18 batches for both models (each pass over `batches` draws anew).
  fixed = [batch for _ in range(3) for batch in batches.dataset]
  dataset = tf.data.Dataset.from_generator(
      lambda: iter(fixed), output_signature=batches.dataset.element_spec)
  weights = []
  for physical_batch_size in (16, None):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.layers.Dense(16, activation="tanh", input_shape=(12,)),
        tf.keras.layers.LayerNormalization(),
        tf.keras.layers.Dense(3)])
    model = _compile(
        tfdp.make_private(model, physical_batch_size=physical_batch_size),
        _dp_sgd(50))
    model.fit(dataset, epochs=1, verbose=0)
    weights.append(model.get_weights())
  worst = max(float(np.max(np.abs(a - b))) for a, b in zip(*weights))
  return worst


def main():
  rng = np.random.default_rng(0)
  print(json.dumps({
      "pointwise_filter_gradient_sum": pointwise_filter_gradient(),
      "resnet_losses": resnet_losses(rng),
      "layer_norm_accumulation_error": layer_norm_accumulation(rng),
  }))


if __name__ == "__main__":
  main()
