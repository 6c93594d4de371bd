"""Independent references for tests: gradients one example at a time."""

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf


def per_example_gradients(model: tf.keras.Model, x, y, loss_fn,
                          sample_weight=None,
                          variables: Optional[Sequence[tf.Variable]] = None
                          ) -> List[List[np.ndarray]]:
  """Returns g_i for each example i, each computed in its own forward pass.

  g_i is the gradient of example i's loss (averaged over its non-batch loss
  axes, times its sample weight) with respect to `variables` (default: the
  model's trainable variables). Result[i][j] is g_i for variable j.
  """
  variables = list(model.trainable_variables if variables is None else
                   variables)
  gradients = []
  # x may be a nest of arrays (a model with several inputs).
  for i in range(len(tf.nest.flatten(x)[0])):
    with tf.GradientTape() as tape:
      prediction = model(tf.nest.map_structure(lambda t, i=i: t[i:i + 1], x),
                         training=True)
      loss = tf.reduce_mean(loss_fn(y[i:i + 1], prediction))
      if sample_weight is not None:
        loss = loss * sample_weight[i]
    grads = tape.gradient(loss, variables,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    gradients.append([tf.convert_to_tensor(g).numpy() for g in grads])
  return gradients


def norms(gradients: List[List[np.ndarray]]) -> np.ndarray:
  """||g_i||_2 over all variables together, per example (float64)."""
  return np.array([
      np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in example))
      for example in gradients
  ])


def clipped_sum(gradients: List[List[np.ndarray]],
                l2_norm_clip: float) -> List[np.ndarray]:
  """sum_i min(1, C/||g_i||) g_i per variable, in float64."""
  factors = np.minimum(1.0, l2_norm_clip / np.maximum(norms(gradients), 1e-30))
  return [
      sum(f * example[j].astype(np.float64)
          for f, example in zip(factors, gradients))
      for j in range(len(gradients[0]))
  ]


def assert_allclose_relative(actual, expected, rtol: float) -> None:
  """Relative closeness measured against the scale of `expected` as a whole.

  Elementwise relative error is meaningless for entries near zero, so the
  tolerance is rtol * max|expected| (plus a float32 floor).
  """
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  scale = max(np.max(np.abs(expected)), 1e-12)
  np.testing.assert_allclose(actual, expected, rtol=0,
                             atol=rtol * scale + 1e-7 * scale)


def assert_gradients_close(actual: Sequence, expected: Sequence,
                           rtol: float) -> None:
  """Per-variable gradients equal, relative to the whole gradient's scale.

  A variable whose true gradient is ~0 (e.g. by symmetry) must then be ~0
  compared with the largest entry of the whole gradient, not with itself.
  """
  assert len(actual) == len(expected)
  scale = max(np.max(np.abs(np.asarray(e, np.float64))) for e in expected)
  for a, e in zip(actual, expected):
    assert tuple(np.shape(a)) == tuple(np.shape(e))
    np.testing.assert_allclose(np.asarray(a, np.float64),
                               np.asarray(e, np.float64), rtol=0,
                               atol=(rtol + 1e-7) * max(scale, 1e-12))


def assert_fast_engine_matches(model: tf.keras.Model, x, y, loss_fn,
                               rtol: float = 1e-5,
                               in_function: bool = True) -> None:
  """The fast engine's norms and clipped sum equal the per-example oracle.

  The clip norm is the median per-example norm, so that about half the
  examples are clipped and both branches of min(1, C/||g_i||) count.
  """
  from tfdp.clipping import fast  # pylint: disable=g-import-not-at-top
  expected = per_example_gradients(model, x, y, loss_fn)
  reference_norms = norms(expected)
  clip = float(np.median(reference_norms))
  run = lambda: fast.clipped_gradients(model, x, y, loss_fn, clip)
  result = tf.function(run)() if in_function else run()
  assert_allclose_relative(result.norms, reference_norms, rtol)
  assert_gradients_close(result.gradient_sum, clipped_sum(expected, clip),
                         rtol)


def mean_over_copies(per_row: List[List[np.ndarray]],
                     copies: int) -> List[List[np.ndarray]]:
  """Augmentation multiplicity's g_i: the mean of rows i K .. i K + K - 1.

  Args:
    per_row: `per_example_gradients` of the B K rows (each row alone).
    copies: K.
  """
  assert len(per_row) % copies == 0
  return [[np.mean([per_row[i + k][j].astype(np.float64)
                    for k in range(copies)], axis=0)
           for j in range(len(per_row[i]))]
          for i in range(0, len(per_row), copies)]


def minus(gradients: List[List[np.ndarray]],
          center: Sequence[np.ndarray]) -> List[List[np.ndarray]]:
  """g_i - v for every example i (centred clipping's per-example terms)."""
  return [[g.astype(np.float64) - np.asarray(v, np.float64)
           for g, v in zip(example, center)] for example in gradients]
