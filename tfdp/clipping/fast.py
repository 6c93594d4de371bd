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
from typing import Dict, Iterator, List, Mapping, Optional

from absl import logging
import tensorflow as tf

from tfdp import _validation
from tfdp.clipping import engine
from tfdp.clipping import registry
# Importing the rules registers them.
from tfdp.clipping.layers import conv  # pylint: disable=unused-import
from tfdp.clipping.layers import dense  # pylint: disable=unused-import
from tfdp.clipping.layers import depthwise  # pylint: disable=unused-import
from tfdp.clipping.layers import embedding  # pylint: disable=unused-import
from tfdp.clipping.layers import fallback
from tfdp.clipping.layers import normalization  # pylint: disable=unused-import
from tfdp.clipping.layers import public_batch_norm  # pylint: disable=unused-import

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
def _tapping(layers) -> Iterator[List[registry.Tap]]:
  """Routes each layer's call through its rule while the block runs."""
  taps: List[registry.Tap] = []
  for layer in layers:
    rule, original = _rule(layer), layer.call

    @tf.autograph.experimental.do_not_convert
    def tapped_call(*args, _layer=layer, _rule=rule, _call=original,
                    **kwargs):
      outputs, tap = _rule.forward(_layer, _call, args, kwargs)
      taps.append(tap)
      return outputs

    object.__setattr__(layer, "call", tapped_call)
  try:
    yield taps
  finally:
    for layer in layers:
      object.__delattr__(layer, "call")


def _layer_gradients(model: tf.keras.Model, x, y,
                     loss_fn: engine.PerExampleLossFn,
                     sample_weight: Optional[tf.Tensor], training: bool):
  """One tapped forward and backward pass.

  Returns:
    (the tapped layers' `registry.LayerGradients`, in `taps` order; the taps'
    layers; the per-example losses; the predictions).
  """
  layers = tapped_layers(model)
  with _tapping(layers) as taps:
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(model.trainable_variables)
      predictions = model(x, training=training)
      losses = engine.as_per_example_losses(loss_fn(y, predictions))
      if sample_weight is not None:
        losses = losses * tf.cast(sample_weight, losses.dtype)
      total_loss = tf.reduce_sum(losses)
  _check_single_calls(taps)
  output_gradients = tape.gradient(
      total_loss, [tap.watched for tap in taps],
      unconnected_gradients=tf.UnconnectedGradients.ZERO)
  per_layer = [tap.rule.gradients(tap, delta)
               for tap, delta in zip(taps, output_gradients)]
  return per_layer, [tap.layer for tap in taps], losses, predictions


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
                      return_predictions: bool = False):
  """Fast S = sum_i min(1, C/||g_i||) g_i over `model.trainable_variables`.

  Same contract as `tfdp.clipping.clipped_gradients` (the exact reference),
  computed from one forward and one backward pass.

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

  Returns:
    `ClippedGradients`, or (`ClippedGradients`, predictions).

  Raises:
    UnsupportedLayerError: see `tapped_layers`; also for a layer called more
      than once per forward pass.
  """
  _validation.check_positive("l2_norm_clip", l2_norm_clip)
  per_layer, _, losses, predictions = _layer_gradients(
      model, x, y, loss_fn, sample_weight, training)
  norms = tf.sqrt(_squared_norm_sum(per_layer, losses))
  factors = engine.clip_factors(norms, l2_norm_clip)
  gradient_sum = _weighted_sums(model, per_layer, [factors] * len(per_layer))
  result = engine.ClippedGradients(gradient_sum, norms, losses)
  return (result, predictions) if return_predictions else result


def per_layer_norms(model: tf.keras.Model, x, y,
                    loss_fn: engine.PerExampleLossFn,
                    training: bool = True) -> Dict[str, tf.Tensor]:
  """Each tapped layer's per-example gradient norms ||g_i^(l)||, [B] each.

  Keyed by layer name (the layers of `tapped_layers(model)`); used to set
  per-layer clipping bounds from data that is not private (or already
  released privately).
  """
  per_layer, layers, _, _ = _layer_gradients(model, x, y, loss_fn, None,
                                             training)
  return {layer.name: tf.sqrt(tf.cast(p.squared_norms, tf.float32))
          for layer, p in zip(layers, per_layer)}


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
  per_layer, layers, losses, _ = _layer_gradients(model, x, y, loss_fn, None,
                                                  training)
  names = [layer.name for layer in layers]
  _check_layer_clips(layer_clips, names)
  factors = [engine.clip_factors(tf.sqrt(tf.cast(p.squared_norms, tf.float32)),
                                 layer_clips[name])
             for name, p in zip(names, per_layer)]
  gradient_sum = _weighted_sums(model, per_layer, factors)
  norms = tf.sqrt(_squared_norm_sum(per_layer, losses))
  return engine.ClippedGradients(gradient_sum, norms, losses)


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
