"""The fast clipping engine: one forward and one backward pass.

The engine runs the model once with every trainable layer tapped (its rule
keeps the layer's input and marks its pre-activation output z), takes one
backward pass for the output gradients delta = dL/dz of all layers at once
(never the weight gradients), and lets each layer's rule turn (input, delta)
into per-example squared norms. Summing those over layers gives ||g_i||^2,
hence the clip factors c_i = min(1, C/||g_i||); the same rules then form
sum_i c_i g_i from the kept tensors and c . delta (book-keeping: no second
backward pass). Each rule picks, per layer, the cheaper of the ghost norm
and explicit per-example gradients (mixed ghost clipping, Bu et al. 2022).
"""

import contextlib
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple,
                    Optional, Sequence)

from absl import logging
import tensorflow as tf

from tfdp import _validation
from tfdp.clipping import engine
from tfdp.clipping import registry
# Importing the rules registers them.
from tfdp.clipping.layers import _common
from tfdp.clipping.layers import conv  # pylint: disable=unused-import
from tfdp.clipping.layers import dense  # pylint: disable=unused-import
from tfdp.clipping.layers import einsum_dense  # pylint: disable=unused-import
from tfdp.clipping.layers import depthwise  # pylint: disable=unused-import
from tfdp.clipping.layers import embedding  # pylint: disable=unused-import
from tfdp.clipping.layers import fallback
from tfdp.clipping.layers import normalization  # pylint: disable=unused-import
from tfdp.clipping.layers import position_embedding  # pylint: disable=unused-import
from tfdp.clipping.layers import public_batch_norm  # pylint: disable=unused-import
from tfdp.clipping.layers import weight_standardized_conv  # pylint: disable=unused-import

UnsupportedLayerError = fallback.UnsupportedLayerError

_FALLBACK = fallback.FallbackRule()
_WARNED_FALLBACK = set()
_BATCH_NORM_TYPES = (tf.keras.layers.BatchNormalization,)


def _sublayers(layer: tf.keras.layers.Layer) -> List[tf.keras.layers.Layer]:
  return [m for m in layer.submodules if isinstance(m, tf.keras.layers.Layer)]


def _own_trainable_weights(layer: tf.keras.layers.Layer) -> List[tf.Variable]:
  """Trainable weights the layer holds itself, not through sublayers."""
  inherited = {w.ref() for sub in _sublayers(layer)
               for w in sub.trainable_weights}
  return [w for w in layer.trainable_weights if w.ref() not in inherited]


def _check_no_batch_norm(layers) -> None:
  for layer in layers:
    if isinstance(layer, _BATCH_NORM_TYPES) and layer.trainable:
      raise UnsupportedLayerError(
          f"Layer '{layer.name}' is a BatchNormalization layer. In training "
          "it normalises each example with statistics of the whole batch, so "
          "each example's gradient depends on the others and per-example "
          "clipping no longer bounds any one example's influence: DP-SGD "
          "with it is not private. Convert the model with "
          "tfdp.layers.convert_batch_norm(model, to='public_batch') "
          "(tfdp.layers.PublicBatchNormalization: statistics from a public "
          "batch, then pass public_data= to tfdp.make_private) or "
          "to='group' (tf.keras.layers.GroupNormalization), or freeze it "
          "(layer.trainable = False runs it in inference mode).")


def tapped_layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """The layers whose own trainable weights the engine must account for.

  Raises:
    UnsupportedLayerError: for BatchNormalization in training, or for
      trainable variables that belong to no layer that can be tapped.
  """
  layers = [model] + _sublayers(model)
  _check_no_batch_norm(layers)
  tapped = [l for l in layers if l is not model and _own_trainable_weights(l)]
  if _own_trainable_weights(model):
    names = [w.name for w in _own_trainable_weights(model)]
    raise UnsupportedLayerError(
        f"Trainable variables {names} belong to the model '{model.name}' "
        "itself rather than to one of its layers, so the engine cannot find "
        "their per-example gradients. Create them in a layer (one with a "
        "clipping rule, or any layer for the exact per-layer fall-back).")
  return tapped


def _rule(layer: tf.keras.layers.Layer) -> registry.LayerRule:
  rule = registry.rule_for(layer)
  if rule is not None:
    return rule
  key = type(layer).__name__ + ":" + layer.name
  if key not in _WARNED_FALLBACK:
    _WARNED_FALLBACK.add(key)
    logging.warning(
        "tfdp: layer '%s' (%s) has no clipping rule that applies to it; "
        "using exact per-example gradients for this layer alone (slower).",
        layer.name,
        type(layer).__name__)
  return _FALLBACK


@contextlib.contextmanager
def _tapping(layers, copies: int = 1) -> Iterator[List[registry.Tap]]:
  """Routes each layer's call through its rule while the block runs.

  Each tap records that `copies` consecutive rows make one example.
  """
  taps: List[registry.Tap] = []
  for layer in layers:
    rule, original = _rule(layer), layer.call

    @tf.autograph.experimental.do_not_convert
    def tapped_call(*args, _layer=layer, _rule=rule, _call=original,
                    **kwargs):
      outputs, tap = _rule.forward(_layer, _call, args, kwargs)
      tap.copies = copies
      taps.append(tap)
      return outputs

    object.__setattr__(layer, "call", tapped_call)
  try:
    yield taps
  finally:
    for layer in layers:
      object.__delattr__(layer, "call")


class _TappedPass(NamedTuple):
  """What one tapped forward and backward pass gives.

  Attributes:
    per_layer: the tapped layers' `registry.LayerGradients`, in tap order.
    layers: the tapped layers, in the same order.
    losses: the per-example losses (means over copies), [B].
    predictions: the model's outputs, one per row.
    center_dots: g_i . v for the `center` v, [B]; None without one.
  """
  per_layer: List[registry.LayerGradients]
  layers: List[tf.keras.layers.Layer]
  losses: tf.Tensor
  predictions: Any
  center_dots: Optional[tf.Tensor]


def _unknown_if_empty(tensor):
  """`tensor`, with its batch size unknown to the graph if it is static 0.

  An empty batch (possible under Poisson sampling) traced with a static
  batch size of 0 makes Grappler's constant folding divide by zero inside
  TensorFlow 2.15 and kill the process with SIGFPE (a Dense, an activation
  and a Dense are enough); the same graph with an unknown batch size runs.
  """
  if not isinstance(tensor, (tf.Tensor, tf.Variable)) and not hasattr(
      tensor, "shape"):
    return tensor
  shape = tf.TensorShape(tensor.shape)
  if shape.rank and shape[0] == 0:
    return tf.raw_ops.PlaceholderWithDefault(
        input=tensor, shape=[None] + shape[1:].as_list())
  return tensor


def _layer_gradients(model: tf.keras.Model, x, y,
                     loss_fn: engine.PerExampleLossFn,
                     sample_weight: Optional[tf.Tensor], training: bool,
                     copies: int = 1,
                     center: Optional[Sequence[tf.Tensor]] = None
                     ) -> _TappedPass:
  """One tapped forward and backward pass.

  With `copies` = K > 1, rows i K .. i K + K - 1 of the batch are example
  i's copies; the loss differentiated is sum_rows loss / K, so that each
  example's gradient is the mean over its copies.

  With a `center` v (one tensor per trainable variable), each rule also
  gives g_i . v for its layer's part of v (`LayerGradients.dot`), from the
  tensors it already has; their sum over layers is g_i . v.
  """
  x, y, sample_weight = tf.nest.map_structure(
      _unknown_if_empty, (x, y, sample_weight))
  layers = tapped_layers(model)
  with _tapping(layers, copies) as taps:
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(model.trainable_variables)
      predictions = model(x, training=training)
      losses = engine.as_per_example_losses(loss_fn(y, predictions))
      if sample_weight is not None:
        losses = losses * tf.cast(sample_weight, losses.dtype)
      if copies > 1:
        tf.debugging.assert_equal(
            tf.shape(losses)[0] % copies, 0, message=(
                f"tfdp: with {copies} copies per example the batch must "
                f"have a multiple of {copies} rows"))
        losses = tf.reduce_mean(tf.reshape(losses, [-1, copies]), axis=1)
      total_loss = tf.reduce_sum(losses)
  _check_single_calls(taps)
  output_gradients = tape.gradient(
      total_loss, [tap.watched for tap in taps],
      unconnected_gradients=tf.UnconnectedGradients.ZERO)
  per_layer = [tap.rule.gradients(tap, delta)
               for tap, delta in zip(taps, output_gradients)]
  center_dots = None if center is None else _center_dots(model, per_layer,
                                                        taps, center, losses)
  return _TappedPass(per_layer, [tap.layer for tap in taps], losses,
                     predictions, center_dots)


def _center_dots(model: tf.keras.Model, per_layer, taps,
                 center: Sequence[tf.Tensor], losses: tf.Tensor) -> tf.Tensor:
  """g_i . v = sum over layers of each layer's part, [B]."""
  by_variable = {v.ref(): c for v, c in zip(model.trainable_variables,
                                            center)}
  dots = [tf.zeros_like(losses, tf.float32)]
  for tap, layer_gradients in zip(taps, per_layer):
    if layer_gradients.dot is None:
      raise UnsupportedLayerError(
          f"The clipping rule for layer '{tap.layer.name}' "
          f"({type(tap.layer).__name__}) gives no inner products g_i . v, "
          "which centred clipping (a public-gradient centre) needs.")
    parts = [by_variable[v.ref()] for v in layer_gradients.variables]
    dots.append(tf.cast(layer_gradients.dot(parts), tf.float32))
  return tf.add_n(dots)


def _squared_norm_sum(per_layer, losses: tf.Tensor) -> tf.Tensor:
  return tf.add_n([tf.cast(p.squared_norms, tf.float32) for p in per_layer] +
                  [tf.zeros_like(losses, tf.float32)])


def _weighted_sums(model: tf.keras.Model, per_layer,
                   factors: List[tf.Tensor]) -> List[tf.Tensor]:
  """sum_i factors[l]_i g_i per variable, in `model.trainable_variables` order.

  `factors[l]` ([B]) weighs the examples in the l-th layer's gradients.
  """
  by_variable: Dict[object, tf.Tensor] = {}
  for layer_gradients, layer_factors in zip(per_layer, factors):
    for variable, gradient in zip(layer_gradients.variables,
                                  layer_gradients.weighted_sum(layer_factors)):
      by_variable[variable.ref()] = gradient
  return [by_variable.get(v.ref(), tf.zeros_like(v))
          for v in model.trainable_variables]


def clipped_gradients(model: tf.keras.Model,
                      x,
                      y,
                      loss_fn: engine.PerExampleLossFn,
                      l2_norm_clip: float,
                      sample_weight: Optional[tf.Tensor] = None,
                      training: bool = True,
                      return_predictions: bool = False,
                      copies_per_example: int = 1,
                      center: Optional[Sequence[tf.Tensor]] = None,
                      empty_batch_guard: bool = True):
  """Fast S = sum_i min(1, C/||g_i||) g_i over `model.trainable_variables`.

  Same contract as `tfdp.clipping.clipped_gradients` (the exact reference),
  computed from one forward and one backward pass.

  Augmentation multiplicity (De et al. 2022): with `copies_per_example` K,
  the batch holds K augmented copies of each of B examples, example i's
  being rows i K .. i K + K - 1, and g_i is the mean of its copies'
  gradients, clipped as one: S = sum_i min(1, C/||g_i||) g_i with
  g_i = (1/K) sum_k grad l(x_{i,k}, y_{i,k}). The sensitivity stays C per
  example. The layer rules treat the copies as more positions of the
  example (ghost norms and book-keeping as for sequences), so no
  per-example gradient is made where K = 1 would not make one.

  Centred clipping (DOPE-SGD): with a `center` v that does not depend on
  the private data (e.g. a public gradient), each example's clipped term is
  that of g_i - v,

      S = sum_i min(1, C/||g_i - v||) (g_i - v),

  from ||g_i - v||^2 = ||g_i||^2 - 2 g_i . v + ||v||^2 (g_i . v from each
  rule's tensors, `LayerGradients.dot`) and
  S = sum_i c_i g_i - (sum_i c_i) v. Each example still moves S by at most
  C; the caller adds v back after the noise.

  Args:
    model: a Keras model (Sequential, Functional, nested or subclassed) whose
      trainable layers treat examples independently.
    x: a batch of inputs.
    y: the matching targets.
    loss_fn: maps (y_true, y_pred) to per-example losses, shape [B].
    l2_norm_clip: C > 0.
    sample_weight: optional per-example loss weights.
    training: passed to the model's call.
    return_predictions: also return the model's outputs.
    copies_per_example: K >= 1 (see above); x, y and `sample_weight` then
      have B K rows.
    center: None, or v (see above): one tensor per trainable variable, in
      `model.trainable_variables` order. `norms` are then ||g_i - v||.
    empty_batch_guard: for a batch of unknown size, whether to check at run
      time that it holds an example before running the model (see
      `_unless_empty`). False only where the caller guarantees one (the
      chunks of `tfdp.make_private(physical_batch_size=...)`): the guard's
      other branch traces the model a second time.

  Returns:
    `ClippedGradients` (norms and losses per example, [B]), or
    (`ClippedGradients`, predictions, one per row).

  Raises:
    UnsupportedLayerError: see `tapped_layers`; also for a layer called more
      than once per forward pass.
  """
  _validation.check_positive("l2_norm_clip", l2_norm_clip)
  copies = _validation.check_positive_int("copies_per_example",
                                          copies_per_example)
  if center is not None:
    center = [tf.cast(v, var.dtype) for v, var in
              zip(_check_center(center, model), model.trainable_variables)]

  def clip():
    tapped = _layer_gradients(model, x, y, loss_fn, sample_weight, training,
                              copies, center)
    squared = _squared_norm_sum(tapped.per_layer, tapped.losses)
    clipping_squared = squared
    if center is not None:
      squared, clipping_squared = _centered_squared_norms(
          squared, tf.cast(tapped.center_dots, tf.float32), center)
    factors = engine.clip_factors(tf.sqrt(clipping_squared), l2_norm_clip)
    gradient_sum = _weighted_sums(model, tapped.per_layer,
                                  [factors] * len(tapped.per_layer))
    if center is not None:
      total = tf.reduce_sum(factors)
      gradient_sum = [g - tf.cast(total, g.dtype) * v
                      for g, v in zip(gradient_sum, center)]
    return (engine.ClippedGradients(gradient_sum, tf.sqrt(squared),
                                    tf.cast(tapped.losses, tf.float32)),
            tapped.predictions)

  result, predictions = (_unless_empty(model, x, clip) if empty_batch_guard
                         else clip())
  return (result, predictions) if return_predictions else result


def _unless_empty(model: tf.keras.Model, x, clip,
                  with_predictions: bool = True):
  """clip(), or what it gives for a batch of no examples.

  Poisson sampling gives empty batches, and TensorFlow's CPU Conv2D (2.15
  to 2.21) returns its input's shape for one, so a convolution followed by
  a layer that reads the channel count (GroupNormalization) fails on it,
  in plain Keras too. For no examples the clipped sum is 0, with no norms
  or losses, and the model need not see them: the predictions (no rows)
  take their structure from the model's inference on one row of zeros.
  Batches known to be non-empty when traced run `clip` alone.

  Returns:
    (`ClippedGradients`, predictions), or the `ClippedGradients` alone
    without `with_predictions`: what `clip` returns.
  """
  static_size = tf.nest.flatten(x)[0].shape[0]
  if static_size:
    return clip()

  def nothing():
    none = tf.zeros([0], tf.float32)
    result = engine.ClippedGradients(
        [tf.zeros_like(v) for v in model.trainable_variables], none, none)
    if not with_predictions:
      return result
    one_row = tf.nest.map_structure(
        lambda t: tf.zeros(tf.concat([[1], tf.shape(t)[1:]], 0), t.dtype), x)
    return result, tf.nest.map_structure(lambda p: p[:0],
                                         model(one_row, training=False))

  if static_size == 0:
    return nothing()
  return tf.cond(tf.shape(tf.nest.flatten(x)[0])[0] > 0, clip, nothing)


def _centered_squared_norms(squared: tf.Tensor, dots: tf.Tensor,
                            center: Sequence[tf.Tensor]):
  """||g_i - v||^2 = ||g_i||^2 - 2 g_i . v + ||v||^2, and the value to clip by.

  Where g_i is close to v the expansion cancels, and float32 rounding could
  make the computed norm smaller than the true one, an example's clipped
  term then longer than C: the clip factors use `_common.safe_difference`,
  which adds a margin of the terms' size and can only shorten the terms.

  Returns:
    (the squared norms, the squared norms the clip factors use), [B] each.
  """
  center_squared = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                             for v in center])
  clipping = _common.safe_difference(squared + center_squared, 2.0 * dots)
  # Rounding could make the expanded square slightly negative.
  return tf.maximum(squared + center_squared - 2.0 * dots, 0.0), clipping


def _check_center(center: Sequence[tf.Tensor],
                  model: tf.keras.Model) -> List[tf.Tensor]:
  center = list(center)
  variables = model.trainable_variables
  shapes_match = len(center) == len(variables) and all(
      tuple(v.shape) == tuple(var.shape) for v, var in zip(center, variables))
  if not shapes_match:
    raise ValueError(
        "center must hold one tensor per trainable variable of the model, "
        f"with its shape: expected {[tuple(v.shape) for v in variables]}, "
        f"got {[tuple(v.shape) for v in center]}")
  return center


def per_layer_norms(model: tf.keras.Model, x, y,
                    loss_fn: engine.PerExampleLossFn,
                    training: bool = True) -> Dict[str, tf.Tensor]:
  """Each tapped layer's per-example gradient norms ||g_i^(l)||, [B] each.

  Keyed by layer name (the layers of `tapped_layers(model)`); used to set
  per-layer clipping bounds from data that is not private (or already
  released privately).
  """
  tapped = _layer_gradients(model, x, y, loss_fn, None, training)
  return {layer.name: tf.sqrt(tf.cast(p.squared_norms, tf.float32))
          for layer, p in zip(tapped.layers, tapped.per_layer)}


def per_layer_clipped_gradients(model: tf.keras.Model,
                                x,
                                y,
                                loss_fn: engine.PerExampleLossFn,
                                layer_clips: Mapping[str, tf.Tensor],
                                training: bool = True
                                ) -> engine.ClippedGradients:
  """S = sum_i clip per layer: each layer's part of g_i clipped on its own.

  With ``g_i^(l)`` example i's gradient for the weights of layer l and
  ``C_l = layer_clips[l]``,

      S^(l) = sum_i min(1, C_l / ||g_i^(l)||) g_i^(l).

  Changing one example moves each ``S^(l)`` by at most ``C_l``, so S has L2
  sensitivity ``sqrt(sum_l C_l^2)``: the noise of the Gaussian mechanism on
  S must be calibrated to that (`per_layer_sensitivity`).

  Args:
    model: as for `clipped_gradients`.
    x: a batch of inputs.
    y: the matching targets.
    loss_fn: maps (y_true, y_pred) to per-example losses, shape [B].
    layer_clips: C_l > 0 for the name of every layer of `tapped_layers`
      (floats or scalar tensors).
    training: passed to the model's call.

  Returns:
    `ClippedGradients`; `norms` are the unclipped norms over all layers.

  Raises:
    ValueError: if `layer_clips` misses a tapped layer or names another.
  """
  _check_layer_clips(layer_clips, [layer.name for layer in
                                   tapped_layers(model)])

  def clip():
    per_layer, layers, losses, _, _ = _layer_gradients(model, x, y, loss_fn,
                                                       None, training)
    factors = [engine.clip_factors(
        tf.sqrt(tf.cast(p.squared_norms, tf.float32)), layer_clips[l.name])
               for l, p in zip(layers, per_layer)]
    gradient_sum = _weighted_sums(model, per_layer, factors)
    norms = tf.sqrt(_squared_norm_sum(per_layer, losses))
    return engine.ClippedGradients(gradient_sum, norms,
                                   tf.cast(losses, tf.float32))

  return _unless_empty(model, x, clip, with_predictions=False)


def per_layer_sensitivity(layer_clips: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """sqrt(sum_l C_l^2): the L2 sensitivity of a per-layer clipped sum."""
  return tf.sqrt(tf.add_n([tf.square(tf.cast(c, tf.float32))
                           for c in layer_clips.values()]))


def _check_layer_clips(layer_clips: Mapping[str, tf.Tensor],
                       names: List[str]) -> None:
  missing = sorted(set(names) - set(layer_clips))
  extra = sorted(set(layer_clips) - set(names))
  if missing or extra:
    raise ValueError(
        f"layer_clips must give a clip bound for exactly the tapped layers "
        f"{names}; missing {missing}, unknown {extra}")


def _check_single_calls(taps: List[registry.Tap]) -> None:
  seen = set()
  for tap in taps:
    if id(tap.layer) in seen:
      raise UnsupportedLayerError(
          f"Layer '{tap.layer.name}' is called more than once in one forward "
          "pass (shared weights). The fast engine needs one call per layer; "
          "use tfdp.clipping.clipped_gradients (exact, slower) for this "
          "model, or give each call its own layer.")
    seen.add(id(tap.layer))
