"""Clean and robust accuracy of a classifier under FGSM and PGD attacks.

Both attacks are cleverhans' (`fast_gradient_method`,
`projected_gradient_descent`), run on batches in inference mode
(`training=False`) with the true labels, each batch through one
`tf.function` traced once. Robust accuracy is an empirical upper bound on the
true robust accuracy (the fraction of examples classified correctly at every
point of the ball): an example counts as robust only if the model is correct
both on it and on its adversarial example, so robust accuracy never exceeds
clean accuracy.
"""

from typing import Any, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.robust import adversarial as adversarial_lib

ATTACKS = ("pgd", "fgsm")


def _check_data(x: Any, y: Any) -> Tuple[np.ndarray, np.ndarray]:
  """Float32 inputs and int64 labels [N] as numpy arrays."""
  if isinstance(x, tf.data.Dataset) or isinstance(y, tf.data.Dataset):
    raise ValueError("x and y must be arrays or tensors, not a "
                     "tf.data.Dataset")
  x = _validation.check_float_batch("x", x, min_rank=2)
  labels = adversarial_lib.sparse_labels(np.asarray(y)).numpy()
  if len(labels) != len(x):
    raise ValueError(f"x and y must hold as many examples, got {len(x)} "
                     f"and {len(labels)}")
  return x, labels


def _mean_over_batches(fn, x: np.ndarray, labels: np.ndarray,
                       batch_size: int) -> float:
  """Mean of the per-example booleans fn(x_batch, labels_batch)."""
  correct = 0
  for start in range(0, len(x), batch_size):
    stop = start + batch_size
    correct += int(tf.reduce_sum(tf.cast(
        fn(tf.constant(x[start:stop]), tf.constant(labels[start:stop])),
        tf.int64)))
  return correct / len(x)


class _PerBatch:
  """A batch function to trace once per evaluation.

  A callable object rather than a closure: TensorFlow counts retracings per
  code object, and one closure per evaluation call would make repeated
  evaluations (an epsilon sweep) look like needless retracing and warn.
  """

  def __init__(self, fn):
    self._fn = fn

  def __call__(self, x, labels):
    return self._fn(x, labels)


def _traced(fn, x: np.ndarray):
  """`fn` as a tf.function of (x batch [None, ...], labels [None])."""
  return tf.function(_PerBatch(fn), input_signature=(
      tf.TensorSpec([None] + list(x.shape[1:]), tf.float32),
      tf.TensorSpec([None], tf.int64)))


def _is_correct(model_fn, x, labels):
  return tf.equal(tf.argmax(model_fn(x), axis=-1), labels)


def clean_accuracy(model: tf.keras.Model,
                   x: Any,
                   y: Any,
                   *,
                   batch_size: int = 256) -> float:
  """Accuracy of `model` (logits, inference mode) on (x, y).

  Args:
    model: a Keras classifier returning logits (or any per-class scores).
    x: inputs [N, ...], floating point.
    y: integer labels [N] or [N, 1], or one-hot labels [N, classes].
    batch_size: examples per forward pass, an integer >= 1.

  Returns:
    The fraction of examples whose arg-max prediction equals the label.

  Raises:
    ValueError: for bad data or a bad batch size.
  """
  batch_size = _validation.check_positive_int("batch_size", batch_size)
  x, labels = _check_data(x, y)
  model_fn = adversarial_lib.inference_fn(model)
  fn = _traced(lambda xb, yb: _is_correct(model_fn, xb, yb), x)
  return _mean_over_batches(fn, x, labels, batch_size)


def robust_accuracy(model: tf.keras.Model,
                    x: Any,
                    y: Any,
                    *,
                    epsilon: float,
                    attack: str = "pgd",
                    norm: Union[str, float] = "inf",
                    step_size: Optional[float] = None,
                    steps: Optional[int] = None,
                    random_start: Optional[bool] = None,
                    clip_min: Optional[float] = None,
                    clip_max: Optional[float] = None,
                    batch_size: int = 256) -> float:
  """Accuracy of `model` under an FGSM or PGD attack of radius `epsilon`.

  Each example is attacked with its true label (untargeted): FGSM takes one
  step x + epsilon * sign(grad) (Linf) or x + epsilon * grad / ||grad||_2
  (L2); PGD iterates `steps` steps of size `step_size`, projecting onto the
  epsilon ball (and [clip_min, clip_max]) after each. An example counts as
  robust if the model classifies it correctly both clean and attacked.

  Args:
    model: a Keras classifier returning logits, run with `training=False`.
    x: inputs [N, ...], floating point (within [clip_min, clip_max] if set).
    y: integer labels [N] or [N, 1], or one-hot labels [N, classes].
    epsilon: radius of the perturbation ball, > 0.
    attack: "pgd" or "fgsm".
    norm: "inf" (or np.inf) for Linf, "2" (or 2) for L2.
    step_size: PGD only: step size in (0, epsilon]; default
      min(epsilon, 2.5 * epsilon / steps).
    steps: PGD only: iterations, an integer >= 1; default 20.
    random_start: PGD only: start from a uniformly random point of the
      ball; default True. Seed with `tf.random.set_seed` to reproduce.
    clip_min: lower end of the valid input range, or None (with clip_max).
    clip_max: upper end of the valid input range, or None (with clip_min).
    batch_size: examples attacked at once, an integer >= 1.

  Returns:
    The robust accuracy, a float in [0, clean accuracy].

  Raises:
    ValueError: for an unknown attack, a setting out of range, or a PGD
      setting given for FGSM.
  """
  _validation.check_choice("attack", attack, ATTACKS)
  batch_size = _validation.check_positive_int("batch_size", batch_size)
  if attack == "pgd":
    pgd = adversarial_lib.AdversarialTraining(
        epsilon=epsilon, norm=norm, step_size=step_size,
        steps=20 if steps is None else steps,
        random_start=True if random_start is None else random_start,
        clip_min=clip_min, clip_max=clip_max)

    def attack_fn(xb, yb):
      return pgd.attack(model, xb, yb)
  else:
    for name, value in (("step_size", step_size), ("steps", steps),
                        ("random_start", random_start)):
      if value is not None:
        raise ValueError(f"{name} applies to attack='pgd' only; leave it "
                         f"None for attack='fgsm', got {value!r}")
    norm = adversarial_lib.parse_norm(norm)
    epsilon = _validation.check_positive("epsilon", epsilon)
    clip_min, clip_max = adversarial_lib.check_clip_range(clip_min, clip_max)

    def attack_fn(xb, yb):
      # pylint: disable=g-import-not-at-top
      from cleverhans.tf2.attacks import fast_gradient_method as fgm
      # pylint: enable=g-import-not-at-top
      return fgm.fast_gradient_method(
          adversarial_lib.inference_fn(model), xb, eps=epsilon,
          norm=np.inf if norm == "inf" else 2,
          loss_fn=adversarial_lib.cross_entropy, clip_min=clip_min,
          clip_max=clip_max, y=yb)

  x, labels = _check_data(x, y)
  model_fn = adversarial_lib.inference_fn(model)

  def robust(xb, yb):
    return tf.logical_and(_is_correct(model_fn, xb, yb),
                          _is_correct(model_fn, attack_fn(xb, yb), yb))

  fn = _traced(robust, x)
  return _mean_over_batches(fn, x, labels, batch_size)
