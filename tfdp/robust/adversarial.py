"""Adversarial (PGD) training inside DP-SGD.

`AdversarialTraining` crafts adversarial examples with cleverhans' projected
gradient descent (PGD, Madry et al. 2018) against the current model and the
true labels; `tfdp.make_private(model, adversarial=...)` calls its
`perturb(model, x, y)` at every training step, before per-example clipping.

Why the DP guarantee survives. Let w be the weights at the current step:
they are the output of the DP mechanism so far, so they may be used freely
(post-processing). PGD replaces example i by

    x_i' = A(x_i, y_i, w),   A = Proj_{B_p(x_i, eps) ∩ [clip_min, clip_max]}
           iterated over  x <- x + alpha * sign(grad_x l(f_w(x), y_i))   (inf)
                          x <- x + alpha * grad / ||grad||_2              (2)

(plus, with `random_start`, a uniform start in the ball drawn independently
per example). The gradient of the summed loss with respect to x_i equals the
gradient of example i's own loss, because the model runs in inference mode
(`training=False`: no batch statistics, no dropout) and examples never mix.
So x_i' is a function of (x_i, y_i, w) and independent noise only: a
per-example pre-processing of the private example. DP-SGD then clips the
gradient of l(f_w(x_i'), y_i) to norm C, so replacing (x_i, y_i) by any other
example still changes the clipped sum by at most 2C (C under add/remove),
exactly as without the attack; batch sampling and the number of steps, hence
the accounting, are unchanged. With `ratio` < 1 each example is replaced
with probability `ratio`, by its own coin, and the batch size is kept: an
example's treatment never depends on which other examples are in the batch.
(Replacing "the first round(ratio * B) examples" would not do: adding one
example to the batch changes B and shifts positions, so it could switch
another example between clean and adversarial and change that example's
clipped gradient as well, a sensitivity of up to 3C instead of C.)

What would break it: an attack whose x_i' depends on other examples (batch
statistics, e.g. BatchNormalization in training mode; universal or
batch-averaged perturbations; mixing examples as in mixup), or labels or
targets chosen from other private examples. The results must also not flow
outside the clipped update (e.g. logging x' of private examples).
"""

import math
from typing import Any, Callable, Dict, Optional, Union
import weakref

import numpy as np
import tensorflow as tf

from tfdp import _validation

NORMS = ("inf", "2")
_INFERENCE_FNS = weakref.WeakKeyDictionary()


def parse_norm(value: Any, name: str = "norm") -> str:
  """Returns "inf" or "2" for the accepted spellings of the Linf/L2 norms."""
  if isinstance(value, str):
    if value in NORMS:
      return value
  elif isinstance(value, (int, float, np.number)) and not isinstance(
      value, bool):
    if value == np.inf:
      return "inf"
    if value == 2:
      return "2"
  raise ValueError(
      f"{name} must be one of 'inf' (or np.inf), '2' (or 2), got {value!r}")


def _cleverhans_norm(norm: str) -> Union[float, int]:
  return np.inf if norm == "inf" else 2


def check_clip_range(clip_min: Any, clip_max: Any):
  """Validates an optional pixel range; returns (clip_min, clip_max)."""
  if (clip_min is None) != (clip_max is None):
    raise ValueError(
        "clip_min and clip_max must be given together (or neither), got "
        f"clip_min={clip_min!r}, clip_max={clip_max!r}")
  if clip_min is None:
    return None, None
  for name, value in (("clip_min", clip_min), ("clip_max", clip_max)):
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or
        not math.isfinite(value)):
      raise ValueError(f"{name} must be a finite number, got {value!r}")
  if not clip_min < clip_max:
    raise ValueError(
        f"clip_min must be < clip_max, got clip_min={clip_min!r}, "
        f"clip_max={clip_max!r}")
  return float(clip_min), float(clip_max)


def inference_fn(model: tf.keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
  """model(t, training=False), one function object per model.

  cleverhans' gradient helper is a `tf.function` that takes the model
  function as an argument; reusing one function object per model avoids
  retracing it on every eager call. The function holds the model weakly.
  """
  fn = _INFERENCE_FNS.get(model)
  if fn is None:
    ref = weakref.ref(model)

    def fn(t):
      return ref()(t, training=False)

    _INFERENCE_FNS[model] = fn
  return fn


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Per-example softmax cross-entropy of integer labels and logits.

  cleverhans calls its `loss_fn(labels=..., logits=...)` and differentiates
  the sum over the batch; for a model without cross-example terms, the
  gradient of the sum with respect to x_i is the gradient of example i's loss.
  """
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.cast(logits, tf.float32))


def sparse_labels(y: Any) -> tf.Tensor:
  """int64 labels [B] from integer labels [B] or [B, 1], or one-hot [B, C]."""
  y = tf.convert_to_tensor(y)
  rank = y.shape.rank
  if rank == 1:
    labels = y
  elif rank == 2 and y.shape[1] == 1:
    labels = y[:, 0]
  elif rank == 2 and y.shape[1] is not None:
    labels = tf.argmax(y, axis=1)
  elif rank == 2:
    labels = tf.cond(tf.equal(tf.shape(y)[1], 1),
                     lambda: tf.cast(tf.reshape(y, [-1]), tf.int64),
                     lambda: tf.argmax(y, axis=1))
  else:
    raise ValueError(
        "y must hold integer labels of shape [batch] or [batch, 1], or "
        f"one-hot labels of shape [batch, classes]; got shape {y.shape}")
  return tf.cast(labels, tf.int64)


class AdversarialTraining:
  """PGD adversarial training for `tfdp.make_private(..., adversarial=...)`.

  At every step, `perturb` replaces each example of the batch, with
  probability `ratio` (independently), by its PGD adversarial example against
  the current model (in inference mode) and its true label, keeping the
  batch size; the DP update then treats them as the data. See the module
  docstring for why this keeps the DP guarantee and what would break it.

  The model must return logits of shape [batch, classes]; the attack
  maximises softmax cross-entropy (cleverhans' default loss,
  `tf.nn.sparse_softmax_cross_entropy_with_logits`, given explicitly).

  Args:
    epsilon: radius of the perturbation ball, > 0, in input units (e.g. 0.3
      for Linf on pixels in [0, 1]).
    norm: "inf" (or np.inf) for Linf, "2" (or 2) for L2.
    step_size: PGD step size alpha, in (0, epsilon]. Default
      min(epsilon, 2.5 * epsilon / steps) (Madry et al.): enough to reach the
      boundary of the ball from anywhere in it, with slack; epsilon / 4 for
      the default 10 steps.
    steps: number of PGD iterations, an integer >= 1.
    random_start: start each example from a uniformly random point of the
      ball (Madry et al.) rather than from the example itself.
    ratio: probability that an example is replaced by its adversarial
      example, each by its own coin (the expected fraction of each batch
      replaced), in (0, 1]; 1 replaces all.
    clip_min: lower end of the valid input range (e.g. 0.0 for pixels), or
      None for no range. Given together with `clip_max`.
    clip_max: upper end of the valid input range, > clip_min, or None.

  Raises:
    ValueError: if an argument is out of its range.

  Example:
    >>> adversarial = tfdp.robust.AdversarialTraining(
    ...     epsilon=0.1, steps=5, clip_min=0.0, clip_max=1.0)
    >>> model = tfdp.make_private(model, adversarial=adversarial)
  """

  def __init__(self,
               *,
               epsilon: float,
               norm: Union[str, float] = "inf",
               step_size: Optional[float] = None,
               steps: int = 10,
               random_start: bool = True,
               ratio: float = 1.0,
               clip_min: Optional[float] = None,
               clip_max: Optional[float] = None):
    self._norm = parse_norm(norm)
    self._epsilon = _validation.check_positive("epsilon", epsilon)
    self._steps = _validation.check_positive_int("steps", steps)
    if step_size is None:
      step_size = min(self._epsilon, 2.5 * self._epsilon / self._steps)
    elif (_validation.check_positive("step_size", step_size) >
          self._epsilon):
      raise ValueError(
          f"step_size must be in (0, epsilon={self._epsilon!r}], got "
          f"{step_size!r}")
    self._step_size = float(step_size)
    if not isinstance(random_start, (bool, np.bool_)):
      raise ValueError(f"random_start must be True or False, got "
                       f"{random_start!r}")
    self._random_start = bool(random_start)
    self._ratio = _validation.check_probability("ratio", ratio)
    self._clip_min, self._clip_max = check_clip_range(clip_min, clip_max)

  norm = property(lambda self: self._norm, doc='"inf" or "2".')
  epsilon = property(lambda self: self._epsilon, doc="Radius of the ball.")
  step_size = property(lambda self: self._step_size, doc="PGD step size.")
  steps = property(lambda self: self._steps, doc="PGD iterations.")
  random_start = property(lambda self: self._random_start,
                          doc="Whether PGD starts at a random point.")
  ratio = property(lambda self: self._ratio,
                   doc="Fraction of each batch replaced.")
  clip_min = property(lambda self: self._clip_min, doc="Input minimum.")
  clip_max = property(lambda self: self._clip_max, doc="Input maximum.")

  def get_config(self) -> Dict[str, Any]:
    """The constructor arguments (JSON-serialisable); see `from_config`."""
    return {"epsilon": self._epsilon, "norm": self._norm,
            "step_size": self._step_size, "steps": self._steps,
            "random_start": self._random_start, "ratio": self._ratio,
            "clip_min": self._clip_min, "clip_max": self._clip_max}

  @classmethod
  def from_config(cls, config: Dict[str, Any]) -> "AdversarialTraining":
    """Rebuilds the object from `get_config()`."""
    return cls(**config)

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"AdversarialTraining({args})"

  def __eq__(self, other: Any) -> bool:
    return (isinstance(other, AdversarialTraining) and
            self.get_config() == other.get_config())

  def __hash__(self) -> int:
    return hash(tuple(sorted(self.get_config().items())))

  def attack(self, model: tf.keras.Model, x: Any,
             labels: Optional[Any] = None) -> tf.Tensor:
    """PGD adversarial examples of every example of `x`.

    Args:
      model: the Keras model (returns logits), run with `training=False`.
      x: a float input batch.
      labels: integer labels [B] (see `sparse_labels` for other encodings),
        or None to attack the model's own predictions.

    Returns:
      The adversarial batch, same shape and dtype as `x`, gradient stopped.
    """
    # pylint: disable=g-import-not-at-top
    from cleverhans.tf2.attacks import projected_gradient_descent as pgd
    # pylint: enable=g-import-not-at-top
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
      raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    adversarial = pgd.projected_gradient_descent(
        inference_fn(model), tf.cast(x, tf.float32),
        eps=self._epsilon, eps_iter=self._step_size, nb_iter=self._steps,
        norm=_cleverhans_norm(self._norm), loss_fn=cross_entropy,
        clip_min=self._clip_min, clip_max=self._clip_max,
        y=None if labels is None else sparse_labels(labels),
        rand_init=self._random_start)
    return tf.stop_gradient(tf.cast(adversarial, x.dtype))

  def perturb(self, model: tf.keras.Model, x: Any, y: Any) -> tf.Tensor:
    """Replaces each example of x, with probability `ratio`, by its PGD example.

    Each example is selected by its own coin, independent of the others
    (with `ratio` = 1 all are); the batch size is kept. Works eagerly and
    inside `tf.function` (the Keras train_step), with a batch size unknown
    when tracing, and under XLA (`jit_compile=True`; there, with `ratio` < 1
    the whole batch is attacked and the selected rows are kept, since XLA
    needs static shapes). Seed with `tf.random.set_seed` for reproducible
    coins and random starts.

    Args:
      model: the model being trained (returns logits).
      x: the input batch, one float tensor [B, ...].
      y: true labels: integers [B] or [B, 1], or one-hot [B, classes]; None
        attacks the model's own predictions.

    Returns:
      A tensor like `x` whose selected rows are adversarial (gradient
      stopped) and whose other rows are `x`'s, bitwise unchanged.
    """
    if tf.nest.is_nested(x):
      raise ValueError(
          "AdversarialTraining needs the model input to be one tensor, got "
          f"a {type(x).__name__}")
    x = tf.convert_to_tensor(x)
    labels = None if y is None else sparse_labels(y)
    if self._ratio == 1.0:
      return self.attack(model, x, labels)
    # Independent per-example coins, not "the first round(ratio * B)": see
    # the module docstring.
    selected = tf.random.uniform(tf.shape(x)[:1]) < self._ratio
    if _in_xla_context():
      # XLA needs static shapes: attack the whole batch, keep the selected.
      mask = tf.reshape(selected, [-1] + [1] * (x.shape.rank - 1))
      return tf.where(mask, self.attack(model, x, labels), x)
    indices = tf.where(selected)
    adversarial = self.attack(
        model, tf.gather_nd(x, indices),
        None if labels is None else tf.gather_nd(labels, indices))
    return tf.tensor_scatter_nd_update(x, indices, adversarial)


def _in_xla_context() -> bool:
  """True while tracing a function compiled with XLA (jit_compile=True)."""
  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  from tensorflow.python.ops import control_flow_util
  # pylint: enable=g-import-not-at-top,g-direct-tensorflow-import
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())
