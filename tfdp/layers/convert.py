"""Replacing BatchNormalization so that a model can be trained privately.

The Keras counterpart of Opacus' `ModuleValidator.fix`: BatchNormalization
mixes the examples of a batch (DP-SGD with it is not private, and the fast
clipping engine refuses it); `convert_batch_norm` returns a copy of a model in
which each of them is a per-example GroupNormalization or a
`PublicBatchNormalization`, with the weights carried over where they map.
"""

from typing import Callable, List, Tuple

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.layers.public_batch_norm import PublicBatchNormalization

TARGETS = ("group", "public_batch")

_BatchNorm = tf.keras.layers.BatchNormalization
_WeightCopy = Tuple[tf.keras.layers.Layer, tf.keras.layers.Layer,
                    Callable[[tf.keras.layers.Layer, tf.keras.layers.Layer],
                             None]]


def convert_batch_norm(model: tf.keras.Model,
                       to: str = "group",
                       groups: int = 32) -> tf.keras.Model:
  """Returns a copy of `model` with every BatchNormalization replaced.

  Each `tf.keras.layers.BatchNormalization`, also inside nested models (e.g.
  a keras-cv `ResNetBackbone` inside a Functional model, or given directly),
  becomes:

  * `to="group"`: `tf.keras.layers.GroupNormalization` over the same channel
    axis with G groups, G the largest divisor of the channel count that is
    <= `groups` (statistics per example and group: no example sees
    another). gamma and beta are copied; the moving statistics have no
    counterpart and are dropped, so the converted model's outputs differ
    from the original's until it is trained (or fine-tuned).
  * `to="public_batch"`: `tfdp.layers.PublicBatchNormalization` with the same
    axis, momentum and epsilon; gamma, beta, moving mean and moving variance
    are copied (the public statistics start at the moving averages), so at
    inference the converted model computes what the original did. Train it
    with `tfdp.make_private(model, public_data=...)`.

  Every other layer is cloned (`tf.keras.models.clone_model`) and keeps its
  weights and `trainable` flag; the original model is left unchanged. A
  converted Functional subclass (such as keras-cv's backbones) comes back as
  a plain Functional `tf.keras.Model` with the same layers and graph.

  Args:
    model: a built Sequential or Functional model (nested Sequential or
      Functional models are converted too). A subclassed model without
      BatchNormalization is returned as is.
    to: "group" or "public_batch".
    groups: the largest number of groups for "group" (Opacus' default is
      32).

  Returns:
    The converted model.

  Raises:
    ValueError: for a bad `to` or `groups`, or a BatchNormalization that
      cannot be replaced: one inside a subclassed model or custom layer
      (whose code creates it: change that code), one not built, or (for
      "group") one over several axes.

  Example:
    >>> model = tf.keras.Sequential([
    ...     tf.keras.layers.Conv2D(8, 3, input_shape=(8, 8, 1)),
    ...     tf.keras.layers.BatchNormalization(),
    ...     tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
    >>> private = tfdp.layers.convert_batch_norm(model, to="public_batch")
  """
  _validation.check_choice("to", to, TARGETS)
  _validation.check_positive_int("groups", groups)
  if not isinstance(model, tf.keras.Model):
    raise ValueError(
        f"model must be a tf.keras.Model, got {type(model).__name__}: wrap a "
        "single layer in a model first")
  return _convert(model, to, groups)


def _is_graph_model(model: tf.keras.Model) -> bool:
  """Sequential or Functional: models clone_model can rebuild layer by layer."""
  # pylint: disable-next=protected-access
  return bool(getattr(model, "_is_graph_network", False)) or isinstance(
      model, tf.keras.Sequential)


def _batch_norms(layer: tf.keras.layers.Layer) -> List[_BatchNorm]:
  return [m for m in [layer] + list(layer.submodules)
          if isinstance(m, _BatchNorm)]


def _convert(model: tf.keras.Model, to: str, groups: int) -> tf.keras.Model:
  if not _is_graph_model(model):
    inner = _batch_norms(model)
    if inner:
      raise ValueError(
          f"Model '{model.name}' is a subclassed model ({type(model).__name__})"
          f" with BatchNormalization layers ({_names(inner)}): "
          "convert_batch_norm can only rebuild Sequential and Functional "
          "models. Create GroupNormalization or "
          "tfdp.layers.PublicBatchNormalization layers in its code instead.")
    return model
  if not model.built:
    raise ValueError(
        f"Model '{model.name}' is not built: give it an input shape (or call "
        "it once) before convert_batch_norm, so that channel counts and "
        "weights are known.")
  copies: List[_WeightCopy] = []

  def clone(layer):
    if isinstance(layer, _BatchNorm):
      new, copy = _replacement(layer, to, groups)
      copies.append((layer, new, copy))
      return new
    if isinstance(layer, tf.keras.Model) and _is_graph_model(layer):
      return _convert(layer, to, groups)  # Built, with its weights.
    inner = _batch_norms(layer)
    if inner:
      raise ValueError(
          f"Layer '{layer.name}' ({type(layer).__name__}) holds "
          f"BatchNormalization layers ({_names(inner)}) inside its own code; "
          "convert_batch_norm can only replace layers of Sequential and "
          "Functional models. Create GroupNormalization or "
          "tfdp.layers.PublicBatchNormalization layers in its code instead.")
    try:
      new = layer.__class__.from_config(layer.get_config())
    except (NotImplementedError, TypeError, ValueError) as error:
      raise ValueError(
          f"convert_batch_norm cannot clone layer '{layer.name}' "
          f"({type(layer).__name__}) from its config: {error}") from error
    copies.append((layer, new, _copy_all_weights))
    return new

  converted = tf.keras.models.clone_model(model, clone_function=clone)
  for old, new, copy in copies:
    copy(old, new)
  return converted


def _names(layers) -> str:
  return ", ".join(f"'{l.name}'" for l in layers)


def _copy_all_weights(old: tf.keras.layers.Layer,
                      new: tf.keras.layers.Layer) -> None:
  if old.weights:
    new.set_weights(old.get_weights())


def _assign(target: tf.Variable, source: tf.Variable) -> None:
  target.assign(np.reshape(source.numpy(), target.shape))


def _largest_divisor(channels: int, limit: int) -> int:
  return max(d for d in range(1, min(channels, limit) + 1)
             if channels % d == 0)


def _replacement(layer: _BatchNorm, to: str, groups: int):
  """The new layer for one BatchNormalization, and how to copy weights."""
  if not layer.built:
    raise ValueError(
        f"BatchNormalization layer '{layer.name}' is not built, so its "
        "channels are unknown: build the model before convert_batch_norm.")
  axes = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [
      layer.axis]
  common = dict(
      epsilon=layer.epsilon, center=layer.center, scale=layer.scale,
      beta_initializer=layer.beta_initializer,
      gamma_initializer=layer.gamma_initializer,
      beta_regularizer=layer.beta_regularizer,
      gamma_regularizer=layer.gamma_regularizer,
      beta_constraint=layer.beta_constraint,
      gamma_constraint=layer.gamma_constraint,
      name=layer.name, trainable=layer.trainable, dtype=layer.dtype_policy)
  if to == "group":
    if len(axes) != 1:
      raise ValueError(
          f"BatchNormalization layer '{layer.name}' normalises over several "
          f"axes {axes}; GroupNormalization takes one channel axis. Use "
          "to='public_batch', which supports several axes.")
    channels = int(np.prod(layer.moving_mean.shape))
    new = tf.keras.layers.GroupNormalization(
        groups=_largest_divisor(channels, groups), axis=axes[0], **common)

    def copy(old, new):
      if old.scale:
        _assign(new.gamma, old.gamma)
      if old.center:
        _assign(new.beta, old.beta)

    return new, copy

  new = PublicBatchNormalization(
      axis=axes, momentum=layer.momentum,
      moving_mean_initializer=layer.moving_mean_initializer,
      moving_variance_initializer=layer.moving_variance_initializer, **common)

  def copy_public(old, new):
    if old.scale:
      _assign(new.gamma, old.gamma)
    if old.center:
      _assign(new.beta, old.beta)
    _assign(new.moving_mean, old.moving_mean)
    _assign(new.moving_variance, old.moving_variance)
    _assign(new.public_mean, old.moving_mean)
    _assign(new.public_variance, old.moving_variance)

  return new, copy_public
