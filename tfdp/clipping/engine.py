"""Per-example gradient clipping: the interface every DP training path uses.

DP-SGD bounds each example's influence on a step by clipping its gradient
g_i to L2 norm at most C before summing:

    c_i = min(1, C / ||g_i||_2),        S = sum_i c_i g_i.

Changing one example then moves S by at most C in L2 norm (add/remove
neighbours), which is the sensitivity the Gaussian noise is calibrated to.

This module holds the exact reference implementation, which materialises the
per-example gradients as the rows of a Jacobian. It is always correct and is
what the faster engines are checked against.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence

import tensorflow as tf

from tfdp import _validation

PerExampleLossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


class ClippedGradients(NamedTuple):
  """The result of per-example clipping for one batch (a tf.nest structure).

  Attributes:
    gradient_sum: one tensor per variable: sum_i c_i g_i.
    norms: shape [batch]: the unclipped per-example norms ||g_i||_2, taken
      over all variables together.
    per_example_losses: shape [batch]: the loss of each example.
  """
  gradient_sum: List[tf.Tensor]
  norms: tf.Tensor
  per_example_losses: tf.Tensor


def clip_factors(norms: tf.Tensor, l2_norm_clip: float) -> tf.Tensor:
  """Returns c_i = min(1, C / ||g_i||), written as C / max(||g_i||, C).

  The second form never divides by zero (a zero gradient gets factor 1).
  """
  clip = tf.cast(l2_norm_clip, norms.dtype)
  return clip / tf.maximum(norms, clip)


def check_finite_norms(norms: tf.Tensor, step: tf.Tensor,
                       tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
  """`tensors`, available only once every per-example norm is finite.

  A NaN or Inf gradient (from a non-finite input, a diverging loss...) would
  turn every weight NaN through the clipped sum, while the step is still
  charged to the privacy budget. Whatever consumes the returned tensors
  waits for this check; callers make the update (and so the step count)
  wait for them, so a failing step changes nothing.

  Args:
    norms: the per-example gradient norms, [B].
    step: the number of steps taken before this one (e.g. the optimizer's
      `iterations`), for the message.
    tensors: what must not be used before the check.

  Returns:
    `tensors`, through identities that depend on the check.

  Raises:
    tf.errors.InvalidArgumentError: when the step runs, naming the step and
      the number of non-finite norms.
  """
  finite = tf.math.is_finite(norms)
  check = tf.debugging.Assert(tf.reduce_all(finite), [
      "tfdp: non-finite (NaN or Inf) per-example gradient norms at DP step",
      step + 1, "(1-based); examples affected:",
      tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int32)),
      "of", tf.size(norms), ". Nothing was applied or charged for this step. "
      "Check the inputs for NaN/Inf (tfdp.data samplers refuse them) and the "
      "loss for overflow (e.g. use from_logits=True)."], summarize=1)
  with tf.control_dependencies([check]):
    return [tf.identity(t) for t in tensors]


def as_per_example_losses(losses: tf.Tensor) -> tf.Tensor:
  """Checks that `losses` holds one loss per example and returns it as [B].

  A loss of rank > 1 (e.g. per time step) is averaged over its non-batch
  axes, as Keras' mean reduction would, so each example keeps one value.

  Raises:
    ValueError: if `losses` is a scalar, i.e. the loss was already reduced
      over the batch and per-example gradients can no longer be recovered.
  """
  if losses.shape.rank == 0:
    raise ValueError(
        "DP-SGD needs one loss value per example, but the loss was reduced "
        "to a scalar. Compile with a loss that does not reduce over the "
        "batch, e.g. tf.keras.losses.SparseCategoricalCrossentropy("
        "reduction=tf.keras.losses.Reduction.NONE) (got a scalar loss; "
        "strings such as 'sparse_categorical_crossentropy' and plain "
        "functions reduce by default).")
  if losses.shape.rank > 1:
    losses = tf.reduce_mean(losses, axis=list(range(1, losses.shape.rank)))
  return losses


def clip_and_sum(per_example_gradients: Sequence[tf.Tensor],
                 l2_norm_clip: float) -> ClippedGradients:
  """Clips materialised per-example gradients and sums them.

  Args:
    per_example_gradients: one tensor per variable, each of shape
      [batch, *variable.shape]: row i is g_i restricted to that variable.
    l2_norm_clip: C > 0.

  Returns:
    `ClippedGradients` with `per_example_losses` left empty (shape [0]).
  """
  squared_norms = tf.add_n([
      tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
      for g in per_example_gradients
  ])
  norms = tf.sqrt(squared_norms)
  factors = clip_factors(norms, l2_norm_clip)
  gradient_sum = [
      tf.tensordot(tf.cast(factors, g.dtype), g, axes=1)
      for g in per_example_gradients
  ]
  return ClippedGradients(gradient_sum, norms, tf.zeros([0], norms.dtype))


def clipped_sum_from_tape(tape: tf.GradientTape, losses: tf.Tensor,
                          variables: Sequence[tf.Variable],
                          l2_norm_clip: float) -> ClippedGradients:
  """Clipped gradient sum from a tape that recorded per-example losses.

  Per-example gradients are the rows of the Jacobian d loss_i / d theta,
  computed by `tape.jacobian` (vectorised with pfor). Exact but memory-hungry
  (batch x parameters): the reference path.

  Args:
    tape: the tape that recorded the forward pass and `losses`.
    losses: per-example losses, shape [batch] (or [batch, ...], averaged over
      the trailing axes).
    variables: the variables to differentiate.
    l2_norm_clip: C > 0.

  Returns:
    The clipped sum, per-example norms and per-example losses.
  """
  with tape:
    losses = as_per_example_losses(losses)
  jacobians = tape.jacobian(
      losses, list(variables),
      unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return clip_and_sum(jacobians, l2_norm_clip)._replace(
      per_example_losses=losses)


def clipped_gradients(model: tf.keras.Model,
                      x,
                      y,
                      loss_fn: PerExampleLossFn,
                      l2_norm_clip: float,
                      sample_weight: Optional[tf.Tensor] = None,
                      training: bool = True) -> ClippedGradients:
  """Turns a model, a batch and a loss into the clipped per-example sum.

  This is the one interface through which tfdp's DP training computes
  S = sum_i min(1, C/||g_i||) g_i over `model.trainable_variables`.

  Args:
    model: a Keras model.
    x: a batch of inputs.
    y: the matching targets.
    loss_fn: maps (y_true, y_pred) to per-example losses, shape [batch]
      (e.g. a Keras loss with `reduction=NONE`).
    l2_norm_clip: C > 0.
    sample_weight: optional per-example weights w_i, applied to the losses
      before differentiation; clipping comes after, so the sensitivity stays
      C whatever the weights.
    training: passed to the model's call.

  Returns:
    `ClippedGradients` for `model.trainable_variables`.

  Example:
    >>> model = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    >>> loss = tf.keras.losses.MeanSquaredError(reduction="none")
    >>> result = clipped_gradients(model, tf.ones([4, 3]), tf.zeros([4, 2]),
    ...                            loss, l2_norm_clip=1.0)
    >>> result.norms.shape
    TensorShape([4])
  """
  _validation.check_positive("l2_norm_clip", l2_norm_clip)
  with tf.GradientTape() as tape:
    y_pred = model(x, training=training)
    losses = as_per_example_losses(loss_fn(y, y_pred))
    if sample_weight is not None:
      losses = losses * tf.cast(sample_weight, losses.dtype)
  return clipped_sum_from_tape(tape, losses, model.trainable_variables,
                               l2_norm_clip)
