"""Canaries: examples an auditor inserts to test a DP training run.

* Dirac (gradient-space, white-box) canaries: `with_dirac_canaries` wraps a
  classifier so that canary i's per-example gradient is g e_i on a weight of
  its own (a "Dirac" gradient, Nasr et al. 2023), and every other example's
  gradient is 0 there. A correct DP-SGD step clips it to C e_i and adds
  N(0, (sigma C)^2) to that weight's update; an auditor who sees every
  iterate reads the canary's signal off the update. The canary goes through
  the trainer's own clipping and noise, so a missing clip (then g, not C) or
  missing noise shows.
* Input-space (black-box) canaries: `mislabeled_canaries` draws examples
  with a label that is not theirs; an auditor who sees only the final model
  scores each by its loss.

Example:
  >>> base = tf.keras.Sequential([tf.keras.layers.Dense(10)])
  >>> model = with_dirac_canaries(base, input_shape=(64,), canaries=4,
  ...                             num_classes=10, gradient_norm=100.0)
  >>> rows = dirac_canary_rows(model, [0, 3])   # canaries 0 and 3
  >>> x = np.concatenate([embed_examples(model, np.ones([5, 64])), rows])
"""

from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfdp import _validation

CANARY_LAYER = "dirac_canaries"
CANARY_LABEL = 1  # Any class but 0, whose logit carries the canary.


class _DiracLogits(tf.keras.layers.Layer):
  """Mixes the classifier's logits with the canaries' (no weights).

  logits = (1 - m) f(x) + m [c - stop_gradient(c), 0, ..., 0], with m = 1
  on a canary row, 0 on a real one. The canary logit's value is always 0, so
  the softmax is uniform on a canary and dL/dc = 1/k - [y = 0] = 1/k (the
  label is `CANARY_LABEL`): the canary's gradient never changes with
  training.
  """

  def __init__(self, num_classes: int, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes

  def call(self, inputs):
    logits, canary_logit, is_canary = inputs
    canary = canary_logit - tf.stop_gradient(canary_logit)
    canary = tf.pad(canary, [[0, 0], [0, self.num_classes - 1]])
    return (1.0 - is_canary) * logits + is_canary * canary

  def get_config(self):
    return dict(super().get_config(), num_classes=self.num_classes)


def with_dirac_canaries(model: tf.keras.Model, *, input_shape: Sequence[int],
                        canaries: int, num_classes: int,
                        gradient_norm: float) -> tf.keras.Model:
  """`model` with `canaries` Dirac canary slots on its input.

  The returned model reads rows [x flattened, s e_i]: the first
  prod(input_shape) values are the example, the last `canaries` its canary
  slot (all 0 for a real example; `dirac_canary_rows` makes canary rows).
  Canary i's per-example gradient is (s / k) e_i on the kernel of the layer
  named `CANARY_LAYER` ([canaries, 1], initialised to 0), with s = k
  `gradient_norm`; a real example's gradient there is 0, and a canary's is 0
  on `model`'s weights.

  Args:
    model: a classifier returning [B, num_classes] logits.
    input_shape: the shape of one example (without the batch axis).
    canaries: the number of canary slots, >= 1.
    num_classes: k, >= 2.
    gradient_norm: the canary's gradient norm before clipping, > 0 (make it
      larger than the clip norm, so a missing clip shows).

  Returns:
    A functional Keras model (wrap it with `tfdp.make_private`).
  """
  canaries = _validation.check_positive_int("canaries", canaries)
  num_classes = _validation.check_positive_int("num_classes", num_classes)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  gradient_norm = _validation.check_positive("gradient_norm", gradient_norm)
  features = int(np.prod(input_shape))
  rows = tf.keras.Input(shape=(features + canaries,), name="audit_rows")
  examples = tf.keras.layers.Reshape(tuple(input_shape))(
      rows[:, :features])
  slots = rows[:, features:]
  is_canary = tf.cast(
      tf.reduce_max(tf.abs(slots), axis=1, keepdims=True) > 0, rows.dtype)
  canary_logit = tf.keras.layers.Dense(
      1, use_bias=False, kernel_initializer="zeros", name=CANARY_LAYER)(slots)
  logits = _DiracLogits(num_classes)([model(examples), canary_logit,
                                      is_canary])
  audit_model = tf.keras.Model(rows, logits, name=f"{model.name}_audited")
  audit_model.dirac_scale = float(num_classes * gradient_norm)
  audit_model.canary_features = features
  return audit_model


def embed_examples(audit_model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
  """Real examples as rows of `audit_model` (canary slots 0)."""
  x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
  canaries = audit_model.input_shape[-1] - x.shape[1]
  return np.concatenate([x, np.zeros([len(x), canaries], np.float32)], 1)


def dirac_canary_rows(audit_model: tf.keras.Model,
                      indices: Sequence[int]) -> np.ndarray:
  """The rows of canaries `indices` (example part 0, slot i = s)."""
  width = audit_model.input_shape[-1]
  slots = width - audit_model.canary_features
  rows = np.zeros([len(indices), width], np.float32)
  for row, index in enumerate(indices):
    if not 0 <= index < slots:
      raise ValueError(f"canary index must be in [0, {slots}), got {index}")
    rows[row, audit_model.canary_features + index] = audit_model.dirac_scale
  return rows


def canary_weights(audit_model: tf.keras.Model) -> np.ndarray:
  """The canaries' weights, [canaries]: what a white-box auditor reads."""
  return audit_model.get_layer(CANARY_LAYER).kernel.numpy()[:, 0]


def mislabeled_canaries(x: np.ndarray, y: np.ndarray, count: int, *,
                        num_classes: int, seed: int
                        ) -> Tuple[np.ndarray, np.ndarray]:
  """`count` examples of `x` with a label other than their own.

  Mislabeled examples are the classic black-box canary: the model fits
  their (wrong) label only if it memorises them. Take them from data that
  is not in the training set.

  Returns:
    (x_canaries, y_canaries), the wrong labels uniform over the other
    classes.
  """
  count = _validation.check_positive_int("count", count)
  if count > len(x):
    raise ValueError(f"count must be at most len(x) = {len(x)}, got {count}")
  rng = np.random.default_rng(seed)
  chosen = rng.choice(len(x), size=count, replace=False)
  shift = rng.integers(1, num_classes, size=count)
  labels = (np.asarray(y)[chosen].astype(np.int64) + shift) % num_classes
  return np.asarray(x)[chosen], labels
