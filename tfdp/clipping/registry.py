"""The registry of per-layer clipping rules.

A rule knows, for one family of Keras layers, how to run the layer so that the
engine can keep what it needs from the forward pass (a `Tap`), and how to turn
that and the gradient of the loss with respect to the tapped tensor into
per-example squared gradient norms and the clipped sum of per-example
gradients (`LayerGradients`). One file per family under
`tfdp/clipping/layers/` registers its rule with `@register(LayerClass, ...)`:
adding a layer means adding a file, not editing a switch.

Notation used in the rules' docstrings: B examples; for example i, a_{i,t} is
the layer input seen at output position t (t = 1..T), delta_{i,t} =
dL/dz_{i,t} is the gradient of the summed loss with respect to the layer's
pre-activation output z at that position; g_i is example i's gradient with
respect to the layer's weights; c_i the clip factor.

Augmentation multiplicity: when each example enters the model as K
augmented copies (K consecutive rows of the batch, `Tap.copies`), example
i's gradient is the mean of its copies' gradients, g_i = (1/K) sum_k
g_{i,k} (the 1/K is in the loss the engine differentiates, hence in delta).
For a linear map this is sum over (k, t) of a_{i,k,t}^T delta_{i,k,t}: the
K copies are K T positions of one example, so the rules' formulas hold
with T replaced by K T, and per-row gradients are summed over copies.
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

import tensorflow as tf


@dataclasses.dataclass
class Tap:
  """What the forward pass keeps for one call of one layer.

  Attributes:
    layer: the layer called.
    rule: the rule that made this tap.
    watched: the tensor z whose gradient dL/dz the engine computes in the
      backward pass (the layer's pre-activation output).
    saved: whatever else the rule needs later (inputs, normalised inputs...).
    copies: how many consecutive rows of the layer's batch belong to one
      example (augmentation multiplicity K; set by the engine). Rules
      return norms and clip factors per example, i.e. per K rows.
  """
  layer: tf.keras.layers.Layer
  rule: "LayerRule"
  watched: tf.Tensor
  saved: Dict[str, Any]
  copies: int = 1


@dataclasses.dataclass
class LayerGradients:
  """Per-example gradient information for one layer call.

  Attributes:
    variables: the layer's trainable variables these gradients are for.
    squared_norms: shape [B]: ||g_i||^2 over `variables` (B examples, i.e.
      rows / `Tap.copies`).
    weighted_sum: maps clip factors c (shape [B]) to sum_i c_i g_i, one
      tensor per variable, in the order of `variables`.
    dot: maps v, one tensor per variable in the order of `variables`, to
      the inner products g_i . v, shape [B] (for centred clipping); None if
      the rule does not provide them.
  """
  variables: Sequence[tf.Variable]
  squared_norms: tf.Tensor
  weighted_sum: Callable[[tf.Tensor], List[tf.Tensor]]
  dot: Optional[Callable[[Sequence[tf.Tensor]], tf.Tensor]] = None


class LayerRule:
  """Base class of the clipping rule of one layer family."""

  def applies_to(self, layer: tf.keras.layers.Layer) -> bool:
    """False for a subclass the rule's formula does not describe.

    E.g. Conv2DTranspose subclasses Conv2D but computes something else. The
    engine then treats the layer as unregistered (the exact fall-back).
    """
    del layer
    return True

  def forward(self, layer: tf.keras.layers.Layer, call: Callable, args,
              kwargs) -> "tuple[Any, Tap]":
    """Runs the layer, returning its outputs and the tap to keep.

    Args:
      layer: the layer being called.
      call: the layer's original `call` method (bound).
      args: positional arguments of the call (inputs first).
      kwargs: keyword arguments of the call (training, mask, ...).
    """
    raise NotImplementedError

  def gradients(self, tap: Tap, output_gradient: tf.Tensor) -> LayerGradients:
    """Per-example norms and the weighted sum from a tap and dL/dz."""
    raise NotImplementedError


_RULES: Dict[Type[tf.keras.layers.Layer], LayerRule] = {}


def register(*layer_classes: Type[tf.keras.layers.Layer]):
  """Class decorator: registers an instance of the rule for these classes."""

  def decorator(rule_class):
    for layer_class in layer_classes:
      _RULES[layer_class] = rule_class()
    return rule_class

  return decorator


def rule_for(layer: tf.keras.layers.Layer) -> Optional[LayerRule]:
  """The rule registered for the layer's class or its nearest base class.

  None if there is none, or if that rule does not apply to the layer.
  """
  for cls in type(layer).__mro__:
    if cls in _RULES:
      rule = _RULES[cls]
      return rule if rule.applies_to(layer) else None
  return None


def registered_classes() -> List[type]:
  return list(_RULES)
