"""SecureSGD's Heterogeneous Gaussian Mechanism (Phan et al., IJCAI 2019).

SecureSGD, StoBatch's baseline, adds Gaussian noise to the first hidden
layer with the HGM's standard deviation (here with its heterogeneity
parameter kappa = 1, as the issue states it)

    s     = ln( sqrt(2 / pi) / delta )
    sigma = sqrt(2) Delta (sqrt(s) + sqrt(s + epsilon)) / (2 epsilon)

and trains the rest with DP-SGD (tfdp's optimizers and accountant). ``s > 0``
requires ``delta < sqrt(2 / pi) ~ 0.798``.

For Tiny ImageNet, `build_securesgd_model` puts the HGM on a 7x7/2-64 conv
whose kernel is constrained so that its L2 sensitivity per unit attack
(`first_layer_sensitivity`) stays <= a known bound, followed by the
ResNet-18-GN body of `tfdp.stobatch.models`; `evaluate` measures
conventional, robust and certified accuracy (Gaussian PixelDP bound).

What the two mechanisms protect (docs/tinyimagenet.md): DP-SGD's
(epsilon, delta), from tfdp's accountant, is the guarantee for the training
data; it covers every weight, the first conv's included. The HGM's
(epsilon, delta) is with respect to a change of one *input* of size at most
``attack_size`` in the attack norm: the robustness side (PixelDP). The two
are about different neighbouring relations and are reported side by side,
not added.
"""

import contextlib
import dataclasses
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import tensorflow as tf

from tfdp import _validation
from tfdp.privacy import mechanisms
from tfdp.robust import certification
from tfdp.stobatch import evaluation as sb_evaluation
from tfdp.stobatch import models as sb_models

_DELTA_MAX = math.sqrt(2.0 / math.pi)


def hgm_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
  """The HGM's noise stddev, ``sqrt(2) Delta (sqrt(s) + sqrt(s + eps)) / (2 eps)``.

  With ``s = ln(sqrt(2/pi) / delta)``.

  Args:
    sensitivity: Delta, the L2 sensitivity, > 0.
    epsilon: > 0.
    delta: in (0, sqrt(2/pi)) so that s > 0.

  Returns:
    sigma.

  Raises:
    ValueError: on an argument out of range.
  """
  sensitivity = _validation.check_positive("sensitivity", sensitivity)
  epsilon = _validation.check_positive("epsilon", epsilon)
  if (isinstance(delta, bool) or not isinstance(delta, (int, float))
      or not 0 < delta < _DELTA_MAX):
    raise ValueError(f"delta must be in the open interval (0, sqrt(2/pi) = "
                     f"{_DELTA_MAX:.6f}), got {delta!r}")
  s = math.log(_DELTA_MAX / delta)
  return (math.sqrt(2.0) * sensitivity * (math.sqrt(s) + math.sqrt(s + epsilon))
          / (2.0 * epsilon))


@tf.keras.utils.register_keras_serializable(package="tfdp")
class HGMNoise(tf.keras.layers.Layer):
  """Adds fresh Gaussian noise ``N(0, sigma^2)``, sigma from `hgm_sigma`.

  SecureSGD puts it on the first hidden layer; a new draw at every call (at
  training, and at inference when ``apply_at_inference``, for the Monte
  Carlo votes of the Gaussian certificate).

  Example:

  >>> layer = HGMNoise(sensitivity=1.0, epsilon=1.0, delta=1e-5)
  >>> round(layer.stddev, 4)
  4.8542
  >>> layer(tf.zeros([2, 3]), training=True).shape
  TensorShape([2, 3])

  Args:
    sensitivity: Delta, > 0.
    epsilon: > 0.
    delta: in (0, sqrt(2/pi)).
    apply_at_inference: Add noise when ``training`` is False or None too.
    **kwargs: Passed to `tf.keras.layers.Layer`.
  """

  def __init__(self, sensitivity: float, epsilon: float, delta: float,
               apply_at_inference: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.stddev = hgm_sigma(sensitivity, epsilon, delta)
    self.sensitivity = float(sensitivity)
    self.epsilon = float(epsilon)
    self.delta = float(delta)
    if not isinstance(apply_at_inference, bool):
      raise ValueError("apply_at_inference must be True or False, got "
                       f"{apply_at_inference!r}")
    self.apply_at_inference = apply_at_inference

  def call(self, inputs, training=None):
    if not training and not self.apply_at_inference:
      return inputs
    # N(0, (z Delta_2)^2) with Delta_2 = sigma, z = 1.
    return inputs + mechanisms.gaussian_noise(
        tf.shape(inputs), l2_sensitivity=self.stddev, noise_multiplier=1.0,
        dtype=inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(sensitivity=self.sensitivity, epsilon=self.epsilon,
                  delta=self.delta, apply_at_inference=self.apply_at_inference)
    return config


# SecureSGD on Tiny ImageNet: the first hidden layer and its sensitivity.

ATTACK_NORMS = ("inf", "2")
CONV_LAYER = "hgm_conv"
NOISE_LAYER = "hgm_noise"
_FILTERS, _KERNEL, _STRIDES = 64, 7, 2
_ROUNDING_MARGIN = 1e-5


def _sensitivity_tensor(kernel: tf.Tensor, norm: str, output_size: int,
                        strides: int) -> tf.Tensor:
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  k = int(kernel.shape[0])
  if norm == "inf":
    per_filter_l1 = tf.reduce_sum(tf.abs(kernel), axis=[0, 1, 2])
    return float(output_size) * tf.norm(per_filter_l1)
  matrix = tf.reshape(kernel, [-1, kernel.shape[-1]])
  sigma_max = tf.reduce_max(tf.linalg.svd(matrix, compute_uv=False))
  return float(-(-k // strides)) * sigma_max


def first_layer_sensitivity(kernel: Any, *, norm: str, output_size: int,
                            strides: int = _STRIDES) -> float:
  """L2 sensitivity per unit attack of a square conv (bias irrelevant).

  For a conv with kernel W [k, k, C, F], stride s and an output of
  P = output_size^2 positions, an input change delta moves the output by

  * L-inf attack (``||delta||_inf <= 1``): each output coordinate by at most
    ``||w_f||_1`` (filter f's kernel), so in L2 by at most
    ``sqrt(P sum_f ||w_f||_1^2) = output_size ||(||w_f||_1)_f||_2``;
  * L2 attack (``||delta||_2 <= 1``): ``||W^T delta_p||_2 <= sigma_max(W)
    ||delta_p||`` per position p (W as a [k k C, F] matrix, delta_p the
    patch), and each input coordinate lies in at most ceil(k / s)^2 patches,
    so by at most ``ceil(k / s) sigma_max(W)``.

  Both are upper bounds (padding only removes terms), which is what the
  Gaussian certificate needs.

  Args:
    kernel: The conv kernel [k, k, C, F].
    norm: The attack norm, "inf" or "2".
    output_size: The conv's output side.
    strides: s.

  Returns:
    Delta_2 per unit attack.
  """
  _validation.check_choice("norm", norm, ATTACK_NORMS)
  output_size = _validation.check_positive_int("output_size", output_size)
  strides = _validation.check_positive_int("strides", strides)
  return float(_sensitivity_tensor(kernel, norm, output_size, strides))


@tf.keras.utils.register_keras_serializable(package="tfdp")
class SensitivityConstraint(tf.keras.constraints.Constraint):
  """Rescales a conv kernel so `first_layer_sensitivity` is <= a bound.

  ``W <- W min(1, bound' / Delta(W))`` with ``bound' = bound (1 - 1e-5)``
  (a margin for float32 rounding): applied by the Keras optimizer after
  every update (post-processing of the DP update), so the HGM's noise,
  calibrated to ``bound``, stays calibrated through training.

  Args:
    bound: The largest sensitivity per unit attack, > 0.
    norm: "inf" or "2".
    output_size: The conv's output side.
    strides: The conv's stride.
  """

  def __init__(self, bound: float, norm: str, output_size: int,
               strides: int = _STRIDES):
    self.bound = _validation.check_positive("bound", bound)
    self.norm = _validation.check_choice("norm", norm, ATTACK_NORMS)
    self.output_size = _validation.check_positive_int("output_size",
                                                      output_size)
    self.strides = _validation.check_positive_int("strides", strides)

  def __call__(self, w):
    sensitivity = _sensitivity_tensor(w, self.norm, self.output_size,
                                      self.strides)
    target = self.bound * (1.0 - _ROUNDING_MARGIN)
    return w * tf.minimum(1.0, target / tf.maximum(sensitivity, 1e-12))

  def get_config(self) -> Dict[str, Any]:
    return {"bound": self.bound, "norm": self.norm,
            "output_size": self.output_size, "strides": self.strides}


@dataclasses.dataclass(frozen=True)
class HGMFirstLayer:
  """What the first hidden layer's mechanism is calibrated to.

  Attributes:
    norm: Attack norm of the sensitivity ("inf" or "2").
    sensitivity: Delta_2 per unit attack that the kernel constraint keeps.
    attack_size: L, the largest input change (in `norm`) the HGM's
      (epsilon, delta) are calibrated for: the noise's sensitivity is
      ``sensitivity * attack_size``.
    epsilon: The HGM's epsilon.
    delta: The HGM's delta.
    sigma: The noise standard deviation, ``hgm_sigma(sensitivity *
      attack_size, epsilon, delta)``.
  """
  norm: str
  sensitivity: float
  attack_size: float
  epsilon: float
  delta: float
  sigma: float


def build_securesgd_model(
    *, num_classes: int, epsilon: float, delta: float,
    attack_size: float = 0.1, norm: str = "inf", sensitivity: float = 1.0,
    side: int = 64, channels: int = 3,
    weights_path: Optional[Union[str, os.PathLike]] = None, seed: int = 0
) -> Tuple[tf.keras.Model, HGMFirstLayer]:
  """SecureSGD's Tiny ImageNet model: HGM first layer, ResNet-18-GN body.

  ``x -> conv7x7/2-64 (kernel constrained: sensitivity per unit attack <=
  sensitivity) -> HGMNoise (fresh Gaussian, training and inference) -> ReLU
  -> ResNet-18 after its stem (GroupNorm; tfdp.stobatch.models.resnet18_body)
  -> FC-256 -> clip [-1, 1] -> FC-K`` (logits). Every weight, the first
  conv's included, is for DP-SGD to train (`tfdp.make_private`): the model
  has no BatchNormalization.

  Args:
    num_classes: K >= 2.
    epsilon: The HGM's epsilon, > 0.
    delta: The HGM's delta, in (0, sqrt(2/pi)).
    attack_size: L > 0, the input change the HGM is calibrated for.
    norm: The attack norm, "inf" or "2".
    sensitivity: The bound on the first layer's sensitivity per unit
      attack, > 0 (its scale is arbitrary: the noise scales with it).
    side: Input side (64 for Tiny ImageNet), >= 8.
    channels: Input channels.
    weights_path: Optional local weights file of a keras-cv ResNet-18
      `ResNetBackbone` (ImageNet weights), loaded into the body; with 3
      channels the first conv starts from its stem kernel (rescaled by the
      constraint).
    seed: Seeds the initialisation.

  Returns:
    ``(model, first_layer)``: the built Functional model and its
    `HGMFirstLayer`.

  Raises:
    ValueError: on an argument out of range or a weights file that does not
      fit; FileNotFoundError: for a missing weights file.
  """
  num_classes = _validation.check_positive_int("num_classes", num_classes)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  attack_size = _validation.check_positive("attack_size", attack_size)
  sensitivity = _validation.check_positive("sensitivity", sensitivity)
  _validation.check_choice("norm", norm, ATTACK_NORMS)
  side = sb_models.check_side(side, "tinyimagenet")
  channels = _validation.check_positive_int("channels", channels)
  seed = _validation.check_non_negative_int("seed", seed)
  noise = HGMNoise(sensitivity * attack_size, epsilon, delta,
                   name=NOISE_LAYER)
  tf.keras.utils.set_random_seed(seed)
  backbone = sb_models.resnet18_backbone(side, 3, weights_path)
  output_size = -(-side // _STRIDES)
  constraint = SensitivityConstraint(sensitivity, norm, output_size)
  conv = tf.keras.layers.Conv2D(_FILTERS, _KERNEL, strides=_STRIDES,
                                padding="same", kernel_constraint=constraint,
                                name=CONV_LAYER)
  inputs = tf.keras.Input((side, side, channels))
  h = conv(inputs)
  h = noise(h)
  h = tf.keras.layers.ReLU(name="hgm_relu")(h)
  h = sb_models.resnet18_body(backbone)(h)
  logits = tf.keras.layers.Dense(num_classes, name="head")(h)
  model = tf.keras.Model(inputs, logits, name="securesgd_tinyimagenet")
  if weights_path is not None and channels == 3:
    conv.kernel.assign(backbone.get_layer(sb_models.RESNET_STEM).kernel)
  conv.kernel.assign(constraint(conv.kernel))
  return model, HGMFirstLayer(norm=norm, sensitivity=sensitivity,
                              attack_size=attack_size, epsilon=noise.epsilon,
                              delta=noise.delta, sigma=noise.stddev)


@contextlib.contextmanager
def _noise_off(layer: HGMNoise):
  """No HGM noise at inference while a call is traced."""
  saved = layer.apply_at_inference
  layer.apply_at_inference = False
  try:
    yield
  finally:
    layer.apply_at_inference = saved


def evaluate(model: tf.keras.Model, x: Any, y: Any, *,
             kappas: Sequence[float],
             attacks: Sequence[str] = sb_evaluation.EVAL_ATTACKS,
             attack_steps: int = 10, num_samples: int = 100,
             alpha: float = 0.05, norm: str = "inf", clip_min: float = -1.0,
             clip_max: float = 1.0, batch_size: int = 500,
             vote_batch_size: int = 500) -> Dict[str, Any]:
  """Conventional, robust and certified accuracy of a SecureSGD model.

  The deployed classifier is the noisy one (fresh HGM noise at every
  forward pass); its prediction is the expected vote over `num_samples`
  draws. Certificate: the Gaussian PixelDP bound
  (`tfdp.robust.certification.gaussian_radius`) with the HGM layer's sigma
  and delta and the *trained* first conv's sensitivity per unit attack in
  `norm` (`first_layer_sensitivity`, <= the constraint's bound).
  Attacks are crafted against the network without the noise and judged by
  the votes, as `tfdp.stobatch.evaluation.evaluate` does; the soundness
  check counts certified points whose PGD example flips the vote.

  Args:
    model: A trained `build_securesgd_model` model.
    x: Inputs [N, side, side, C] in [clip_min, clip_max].
    y: Integer labels [N].
    kappas: Attack sizes (> 0) in `norm`.
    attacks: Subset of ("fgsm", "ifgsm", "mim", "pgd").
    attack_steps: Iterations of the iterative attacks.
    num_samples: Noise draws per example.
    alpha: Certificates hold with probability >= 1 - alpha per example.
    norm: "inf" or "2".
    clip_min: Lowest valid input.
    clip_max: Highest valid input.
    batch_size: Examples attacked at once.
    vote_batch_size: Rows per forward pass when voting.

  Returns:
    A JSON-ready dict with the keys of `tfdp.stobatch.evaluation.evaluate`
    (``noise_scale`` is the Gaussian sigma, ``sensitivity`` the L2 one).

  Raises:
    ValueError: on an argument out of range.
  """
  x, y, kappas = sb_evaluation.check_inputs(
      x, y, kappas, attacks, attack_steps, num_samples, norm,
      norms=ATTACK_NORMS)
  noise = model.get_layer(NOISE_LAYER)
  conv = model.get_layer(CONV_LAYER)
  sensitivity = first_layer_sensitivity(
      conv.kernel, norm=norm, output_size=int(conv.output_shape[1]),
      strides=conv.strides[0])

  @tf.function
  def base(t):
    with _noise_off(noise):
      return model(t, training=False)

  result = sb_evaluation.evaluate_noisy_classifier(
      base, tf.function(lambda t: model(t, training=False)),
      lambda p1, p2: certification.gaussian_radius(
          p1, p2, sensitivity, noise.stddev, noise.delta),
      x, y, num_classes=int(model.output_shape[-1]), kappas=kappas,
      attacks=attacks, attack_steps=attack_steps, num_samples=num_samples,
      alpha=alpha, norm=norm, clip_min=clip_min, clip_max=clip_max,
      batch_size=batch_size, vote_batch_size=vote_batch_size)
  return dict(result, noise_scale=float(noise.stddev),
              sensitivity=float(sensitivity))
