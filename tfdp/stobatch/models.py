"""StoBatch's architectures: a DP auto-encoder first conv, then an ordinary body.

Every model is a `StoBatchNet`: ``x -> DPAutoencoderConv -> body -> clipped
last hidden layer h in [-1, 1]^E -> Dense(K) logits``. The trainer needs the
pieces separately (the first layer's reconstruction loss, the clipped hidden
layer and the output kernel for the noisy Taylor loss), so they are
attributes: `autoencoder`, `body` (ending with `ClipHidden`), `head`.

Architectures (Phan et al., ICML 2020, as in the original code), inputs in
[-1, 1]:

* ``"mnist"`` (28x28x1): DP conv5x5/2-32, norm, avgpool 2x2, conv5x5/2-64,
  norm, FC-256, clip, FC-K.
* ``"cifar10"`` (28x28x3 crops of 32x32 images): DP conv4x4/2-128,
  conv5x5-128 concatenated with the first layer's output, norm,
  conv5x5-256, norm, avgpool 2x2, FC-256, clip, FC-K.

Normalisation: GroupNormalization, not the original's BatchNorm. StoBatch's
output-layer guarantee is a functional mechanism whose sensitivity
``Delta3 = 2 |h_pi|`` bounds how much *one example's* term in the batch
objective ``(1/m) sum_i T(h_i W, y_i)`` can move the objective's
coefficients, with every ``h_i`` in [-1, 1]. Training-mode BatchNorm
normalises each ``h_i`` with statistics of the whole batch, so changing one
example changes the hidden features (and the terms) of *all m examples*:
the change of the coefficients is then bounded only by ``m`` times the
per-example bound, and Delta3 no longer holds. Nor are the running
statistics used at inference covered by any noise. Calling the first
layer's output "already private" does not rescue this: its noise is drawn
once and is the same for every example, so the representation of a single
example is a deterministic function of it, not a DP release. We could not
argue BatchNorm soundly, so the models use GroupNormalization, which
normalises each example with its own statistics (no cross-example terms, no
running statistics); ``norm="none"`` drops normalisation.

The first layer's noise scales come from `tfdp.stobatch.budget`, which needs
``sigma_max(W1)``; `build_stobatch_model` draws W1's initial value (seeded),
computes its sigma_max as the original code does, builds the budget and the
layer with that kernel as its initializer.
"""

from typing import Optional, Sequence, Tuple

import secrets

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.stobatch import budget as budget_lib
from tfdp.stobatch import layers as sb_layers

ARCHITECTURES = ("mnist", "cifar10")
NORMS = ("group", "none")

# (input side, filters, kernel size) of the DP auto-encoder conv (stride 2).
_FIRST_LAYER = {"mnist": (28, 32, 5), "cifar10": (28, 128, 4)}
_HIDDEN_WIDTH = 256


def input_side(architecture: str) -> int:
  """The square input side the architecture expects (28 for both)."""
  _validation.check_choice("architecture", architecture, ARCHITECTURES)
  return _FIRST_LAYER[architecture][0]


def _norm(norm: str, channels: int, name: str):
  if norm == "none":
    return tf.keras.layers.Activation("linear", name=name)
  groups = min(32, channels)
  while channels % groups:
    groups -= 1
  return tf.keras.layers.GroupNormalization(groups=groups, name=name)


def _mnist_body(shape, norm: str) -> tf.keras.Model:
  inputs = tf.keras.Input(shape)
  h = _norm(norm, shape[-1], "norm1")(inputs)
  h = tf.keras.layers.AveragePooling2D(2, padding="same")(h)
  h = tf.keras.layers.Conv2D(64, 5, strides=2, padding="same",
                             activation="relu", name="conv2")(h)
  h = _norm(norm, 64, "norm2")(h)
  h = tf.keras.layers.Flatten()(h)
  h = tf.keras.layers.Dense(_HIDDEN_WIDTH, activation="relu", name="fc1")(h)
  h = sb_layers.ClipHidden(1.0, name="clip")(h)
  return tf.keras.Model(inputs, h, name="body")


def _cifar10_body(shape, norm: str) -> tf.keras.Model:
  inputs = tf.keras.Input(shape)
  h = tf.keras.layers.Conv2D(128, 5, padding="same", activation="relu",
                             name="conv2")(inputs)
  h = tf.keras.layers.Concatenate(name="concat")([inputs, h])
  h = _norm(norm, 128 + shape[-1], "norm2")(h)
  h = tf.keras.layers.Conv2D(256, 5, padding="same", activation="relu",
                             name="conv3")(h)
  h = _norm(norm, 256, "norm3")(h)
  h = tf.keras.layers.AveragePooling2D(2, padding="same")(h)
  h = tf.keras.layers.Flatten()(h)
  h = tf.keras.layers.Dense(_HIDDEN_WIDTH, activation="relu", name="fc1")(h)
  h = sb_layers.ClipHidden(1.0, name="clip")(h)
  return tf.keras.Model(inputs, h, name="body")


def secret_seed(seed: Optional[int] = None) -> int:
  """`seed` if given (tests), else 62 bits from the OS's secure entropy.

  The fixed noise draws are stateless functions of their seed; with the TF
  global seed set (as `tf.keras.utils.set_random_seed` does), an unseeded
  draw would be reproducible from that public seed, so privacy needs a seed
  nobody knows.
  """
  if seed is None:
    return secrets.randbits(62)
  return _validation.check_non_negative_int("noise_seed", seed)


class StoBatchNet(tf.keras.Model):
  """``logits = head(body(autoencoder(x)))`` with the pieces exposed.

  Args:
    autoencoder: The `DPAutoencoderConv` first layer.
    body: A Keras model from the first layer's output to the clipped last
      hidden layer [batch, E] in [-1, 1].
    num_classes: K.
    budget: The `StoBatchBudget` the noise scales come from (kept for
      reporting; not used in the forward pass).
    **kwargs: Passed to `tf.keras.Model`.
  """

  def __init__(self, autoencoder: sb_layers.DPAutoencoderConv,
               body: tf.keras.Model, num_classes: int,
               budget: Optional[budget_lib.StoBatchBudget] = None, **kwargs):
    super().__init__(**kwargs)
    self.autoencoder = autoencoder
    self.body = body
    self.num_classes = _validation.check_positive_int("num_classes",
                                                      num_classes)
    self.head = tf.keras.layers.Dense(num_classes, name="head")
    self.budget = budget

  @property
  def hidden_width(self) -> int:
    """E, the width of the clipped last hidden layer."""
    return int(self.body.output_shape[-1])

  def hidden(self, x: tf.Tensor, training=None) -> tf.Tensor:
    """The clipped last hidden layer h [batch, E]."""
    return self.body(self.autoencoder(x, training=training),
                     training=training)

  def call(self, inputs, training=None):
    return self.head(self.hidden(inputs, training=training))

  @property
  def autoencoder_variables(self):
    """W1 and its bias: trained by the reconstruction loss alone."""
    return self.autoencoder.trainable_variables

  @property
  def upper_variables(self):
    """Every other trainable variable: trained by the output loss."""
    ae = {id(v) for v in self.autoencoder.trainable_variables}
    return [v for v in self.trainable_variables if id(v) not in ae]


def build_stobatch_model(
    architecture: str, *, num_classes: int, epsilon_ae: float,
    epsilon_out: float, batch_size: int, channels: Optional[int] = None,
    norm: str = "group", input_inference_noise: str = "fixed",
    hidden_inference_noise: str = "fixed", seed: int = 0,
    noise_seed: Optional[int] = None
) -> Tuple[StoBatchNet, budget_lib.StoBatchBudget]:
  """Builds a StoBatch model and its budget (noise scales).

  Args:
    architecture: "mnist" or "cifar10" (see the module docstring).
    num_classes: K >= 2.
    epsilon_ae: The DP auto-encoder's budget, > 0.
    epsilon_out: The output layer's budget, > 0.
    batch_size: m, the size of each fixed disjoint batch (one replica's
      batch), >= 1.
    channels: Input channels; default 1 for "mnist", 3 for "cifar10".
    norm: "group" (GroupNormalization) or "none"; BatchNorm is not offered
      (see the module docstring).
    input_inference_noise: Inference mode of the input noise ("fixed",
      "fresh", "none").
    hidden_inference_noise: Inference mode of the hidden noise.
    seed: Seeds W1's initial value and the other layers' initialisation.
    noise_seed: Seeds the fixed Laplace draws of the first layer, for tests
      only: noise that can be recomputed from a known seed protects nothing.
      None (the default) draws it from the OS entropy.

  Returns:
    ``(model, budget)``: the built model (called once on zeros) and its
    `StoBatchBudget`, whose ``sigma_max_w1`` is that of W1's initial value.

  Raises:
    ValueError: on an argument out of range.
  """
  _validation.check_choice("architecture", architecture, ARCHITECTURES)
  _validation.check_choice("norm", norm, NORMS)
  num_classes = _validation.check_positive_int("num_classes", num_classes)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  seed = _validation.check_non_negative_int("seed", seed)
  side, filters, kernel_size = _FIRST_LAYER[architecture]
  if channels is None:
    channels = 1 if architecture == "mnist" else 3
  channels = _validation.check_positive_int("channels", channels)
  kernel0 = tf.keras.initializers.GlorotUniform(seed=seed)(
      (kernel_size, kernel_size, channels, filters)).numpy()
  output_size = -(-side // 2)
  budget = budget_lib.stobatch_budget(
      epsilon_ae=epsilon_ae, epsilon_out=epsilon_out, batch_size=batch_size,
      channels=channels, kernel_size=kernel_size, output_size=output_size,
      sigma_max_w1=budget_lib.kernel_sigma_max(kernel0),
      hidden_width=_HIDDEN_WIDTH)
  autoencoder = sb_layers.DPAutoencoderConv(
      filters, kernel_size, input_noise_scale=budget.input_noise_scale,
      hidden_noise_scale=budget.hidden_noise_scale, strides=2,
      padding="same", activation="relu",
      input_inference_noise=input_inference_noise,
      hidden_inference_noise=hidden_inference_noise,
      kernel_initializer=tf.keras.initializers.Constant(kernel0),
      seed=secret_seed(noise_seed), name="dp_autoencoder")
  tf.keras.utils.set_random_seed(seed)
  body_fn = _mnist_body if architecture == "mnist" else _cifar10_body
  body = body_fn((output_size, output_size, filters), norm)
  model = StoBatchNet(autoencoder, body, num_classes, budget=budget,
                      name=f"stobatch_{architecture}")
  model(tf.zeros([1, side, side, channels]))
  return model, budget


def to_architecture_input(x: np.ndarray, architecture: str,
                          *, crop: str = "center",
                          rng: Optional[np.random.Generator] = None
                          ) -> np.ndarray:
  """Maps images in [0, 1] to the architecture's input in [-1, 1].

  * Pixels: ``2 x - 1`` (StoBatch's range; attack sizes are in these units).
  * Channels: grey images are repeated to 3 channels for "cifar10"; colour
    images are averaged to one channel for "mnist".
  * Size: images smaller than 28x28 (e.g. 8x8 digits) are resized
    (bilinear) to 28x28; larger ones (32x32 CIFAR-10) are cropped to 28x28,
    at the centre or, with ``crop="random"`` and `rng`, at a random offset
    per image (a new view of the same example, not an extra copy: the
    number of examples does not change).

  Args:
    x: Images [N, H, W, C] in [0, 1].
    architecture: "mnist" or "cifar10".
    crop: "center" or "random".
    rng: NumPy generator for random crops.

  Returns:
    float32 [N, 28, 28, C'] in [-1, 1].
  """
  side = input_side(architecture)
  _validation.check_choice("crop", crop, ("center", "random"))
  x = np.asarray(x, np.float32)
  if x.ndim != 4:
    raise ValueError(f"x must be images [N, H, W, C], got shape {x.shape}")
  want = 1 if architecture == "mnist" else 3
  if x.shape[-1] != want:
    x = (np.repeat(x, want, axis=-1) if x.shape[-1] == 1
         else x.mean(axis=-1, keepdims=True))
  if x.shape[1] < side or x.shape[2] < side:
    x = tf.image.resize(x, (side, side), method="bilinear").numpy()
  elif x.shape[1] > side or x.shape[2] > side:
    dh, dw = x.shape[1] - side, x.shape[2] - side
    if crop == "random":
      rng = rng or np.random.default_rng(0)
      oy = rng.integers(0, dh + 1, len(x))
      ox = rng.integers(0, dw + 1, len(x))
      x = np.stack([img[a:a + side, b:b + side]
                    for img, a, b in zip(x, oy, ox)])
    else:
      x = x[:, dh // 2:dh // 2 + side, dw // 2:dw // 2 + side]
  return np.clip(2.0 * x - 1.0, -1.0, 1.0).astype(np.float32)


__all__: Sequence[str] = ("ARCHITECTURES", "NORMS", "StoBatchNet",
                          "build_stobatch_model", "secret_seed",
                          "input_side", "to_architecture_input")
