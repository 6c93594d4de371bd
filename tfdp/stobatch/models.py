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
* ``"tinyimagenet"`` (64x64x3, the first 30 Tiny ImageNet classes): DP
  conv7x7/2-64, then a ResNet-18 (keras-cv `ResNetBackbone`, basic blocks)
  from its stem's normalisation on: the DP conv takes the place of the
  ResNet stem conv (the same 7x7/2-64 shape), then norm, max-pool 3x3/2,
  the four stacks, global average pool, FC-256, clip, FC-K. Optional
  ImageNet weights come from a local file (`weights_path`, never
  downloaded); they also initialise W1 from the ResNet stem's kernel.

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
running statistics); ``norm="none"`` drops normalisation (not offered for
"tinyimagenet", whose keras-cv ResNet's BatchNorms are converted to
GroupNormalization by `tfdp.layers.convert_batch_norm`).

The first layer's noise scales come from `tfdp.stobatch.budget`, which needs
``sigma_max(W1)``; `build_stobatch_model` draws W1's initial value (seeded),
computes its sigma_max as the original code does, builds the budget and the
layer with that kernel as its initializer.
"""

import os
from typing import Optional, Sequence, Tuple, Union

import secrets

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.layers import convert as convert_lib
from tfdp.stobatch import budget as budget_lib
from tfdp.stobatch import layers as sb_layers

ARCHITECTURES = ("mnist", "cifar10", "tinyimagenet")
NORMS = ("group", "none")

# (input side, filters, kernel size) of the DP auto-encoder conv (stride 2).
_FIRST_LAYER = {"mnist": (28, 32, 5), "cifar10": (28, 128, 4),
                "tinyimagenet": (64, 64, 7)}
_HIDDEN_WIDTH = 256
# ResNet-18 as keras-cv's ResNetBackbone builds it; its stem conv is the
# layer the DP first layer replaces.
_RESNET18 = dict(stackwise_filters=[64, 128, 256, 512],
                 stackwise_blocks=[2, 2, 2, 2],
                 stackwise_strides=[1, 2, 2, 2], include_rescaling=False,
                 block_type="basic_block")
RESNET_STEM = "conv1_conv"


def input_side(architecture: str) -> int:
  """The square input side the architecture expects (28, 28, 64)."""
  _validation.check_choice("architecture", architecture, ARCHITECTURES)
  return _FIRST_LAYER[architecture][0]


def check_side(side: Optional[int], architecture: str) -> int:
  """`side` (>= 8) or, if None, the architecture's own input side."""
  _validation.check_choice("architecture", architecture, ARCHITECTURES)
  if side is None:
    return input_side(architecture)
  side = _validation.check_positive_int("side", side)
  if side < 8:
    raise ValueError(f"side must be >= 8, got {side}")
  return side


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


def resnet18_backbone(side: int, channels: int = 3,
                      weights_path: Optional[Union[str, os.PathLike]] = None
                      ) -> tf.keras.Model:
  """keras-cv's ResNet-18 backbone on [side, side, channels] inputs.

  Built offline (`keras_cv.models.ResNetBackbone` with ResNet-18's
  configuration, basic blocks, no rescaling: the preset names would fetch
  configurations from the network), still with its BatchNormalization
  layers; with `weights_path`, its weights are loaded from that file.

  Args:
    side: Input side, >= 8.
    channels: Input channels.
    weights_path: Optional local weights file of a ResNet-18
      `ResNetBackbone` (see `load_backbone_weights`).

  Returns:
    The backbone, a Functional model to [batch, s, s, 512] with
    s = ceil(side / 32).
  """
  import keras_cv  # pylint: disable=g-import-not-at-top

  side = _validation.check_positive_int("side", side)
  channels = _validation.check_positive_int("channels", channels)
  backbone = keras_cv.models.ResNetBackbone(
      input_shape=(side, side, channels), **_RESNET18)
  if weights_path is not None:
    load_backbone_weights(backbone, weights_path)
  return backbone


def load_backbone_weights(backbone: tf.keras.Model,
                          weights_path: Union[str, os.PathLike]) -> None:
  """Loads a local weights file into a keras-cv ResNet-18 backbone, strictly.

  The file holds the weights of a `ResNetBackbone` of the same configuration
  (ResNet-18, basic blocks, 3 input channels, any input side), saved with
  ``backbone.save_weights(path)``: a Keras HDF5 file (``.h5``) or a
  TensorFlow checkpoint prefix (``path.index`` exists). Every layer must
  match (no ``skip_mismatch``): a file of another architecture fails here
  instead of silently leaving layers at their random initialisation.
  Nothing is downloaded.

  Args:
    backbone: The model from `resnet18_backbone`, with BatchNormalization
      layers (load before `tfdp.layers.convert_batch_norm`).
    weights_path: The file.

  Raises:
    FileNotFoundError: if there is no such file.
    ValueError: if the file does not fit the backbone.
  """
  path = os.fspath(weights_path)
  if not (os.path.isfile(path) or os.path.isfile(path + ".index")):
    raise FileNotFoundError(
        f"weights_path {path!r} does not exist: give a local weights file of "
        "a keras-cv ResNet-18 ResNetBackbone saved with save_weights() "
        "(.h5, or a TensorFlow checkpoint prefix); weights are never "
        "downloaded")
  try:
    status = backbone.load_weights(path)
    if status is not None:  # TF checkpoint format.
      status.assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as error:
    raise ValueError(
        f"weights_path {path!r} does not hold the weights of a ResNet-18 "
        f"ResNetBackbone ({_RESNET18}, 3 input channels): {error}") from error


def _body_after_stem(backbone: tf.keras.Model
                     ) -> Tuple[tf.keras.Input, tf.Tensor]:
  """Re-applies the backbone's layers after its stem conv to a new input.

  Returns the new input, shaped as the stem's output [h, h, 64], and the
  backbone's output on it; the layers (and weights) are the backbone's own.
  """
  stem = backbone.get_layer(RESNET_STEM)
  inputs = tf.keras.Input(stem.output_shape[1:])
  tensors = {id(stem.output): inputs}
  for layer in backbone.layers:
    if layer is stem or isinstance(layer, tf.keras.layers.InputLayer):
      continue
    args = tf.nest.map_structure(lambda t: tensors[id(t)], layer.input)
    tensors[id(layer.output)] = layer(args)
  return inputs, tensors[id(backbone.output)]


def resnet18_body(backbone: tf.keras.Model) -> tf.keras.Model:
  """ResNet-18 after its stem conv, GroupNorm, to the clipped hidden layer.

  ``[h, h, 64]`` (what the stem conv would output) ``-> norm (the
  stem's) -> ReLU -> max-pool -> 4 stacks -> global average pool -> FC-256
  ReLU -> ClipHidden(1)``.
  The backbone's BatchNormalization layers become GroupNormalization
  (`tfdp.layers.convert_batch_norm`, gamma and beta copied).

  Args:
    backbone: A `resnet18_backbone`.

  Returns:
    The body, a Functional model named "body".
  """
  converted = convert_lib.convert_batch_norm(backbone, to="group")
  inputs, h = _body_after_stem(converted)
  h = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(h)
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

  def hidden(self, x: tf.Tensor, training=None, draw=None) -> tf.Tensor:
    """The clipped last hidden layer h [batch, E].

    `draw`: each example's fixed-batch index [batch], which selects its
    batch's fixed first-layer noise (`layers.FixedLaplaceNoise`).
    """
    return self.body(self.autoencoder(x, training=training, draw=draw),
                     training=training)

  def call(self, inputs, training=None, draw=None):
    return self.head(self.hidden(inputs, training=training, draw=draw))

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
    noise_seed: Optional[int] = None, side: Optional[int] = None,
    weights_path: Optional[Union[str, os.PathLike]] = None,
    num_batches: int = 1, forward_noise: str = "dp"
) -> Tuple[StoBatchNet, budget_lib.StoBatchBudget]:
  """Builds a StoBatch model and its budget (noise scales).

  Args:
    architecture: "mnist", "cifar10" or "tinyimagenet" (see the module
      docstring).
    num_classes: K >= 2.
    epsilon_ae: The DP auto-encoder's budget, > 0.
    epsilon_out: The output layer's budget, > 0.
    batch_size: m, the size of each fixed disjoint batch (one replica's
      batch), >= 1.
    channels: Input channels; default 1 for "mnist", 3 otherwise.
    norm: "group" (GroupNormalization) or "none" ("group" only for
      "tinyimagenet"); BatchNorm is not offered (see the module docstring).
    input_inference_noise: Inference mode of the input noise ("fixed",
      "fresh", "none").
    hidden_inference_noise: Inference mode of the hidden noise.
    seed: Seeds W1's initial value and the other layers' initialisation.
    noise_seed: Seeds the fixed Laplace draws of the first layer, for tests
      only: noise that can be recomputed from a known seed protects nothing.
      None (the default) draws it from the OS entropy.
    side: Input side; default `input_side(architecture)` (tests use
      smaller images).
    num_batches: The number of fixed disjoint batches
      (`trainer.FixedBatches.num_batches`): the first layer holds one
      independent noise draw per batch.
    forward_noise: "dp" (the classifier path adds the first layer's DP
      draws, as the paper) or "none" (only its reconstruction objective
      does; see `layers.DPAutoencoderConv`).
    weights_path: "tinyimagenet" only: a local weights file of a keras-cv
      ResNet-18 `ResNetBackbone` (ImageNet weights; see
      `load_backbone_weights`), loaded into the ResNet body; with 3 input
      channels W1 starts from the ResNet stem's 7x7x3x64 kernel.

  Returns:
    ``(model, budget)``: the built model (called once on zeros) and its
    `StoBatchBudget`, whose ``sigma_max_w1`` is that of W1's initial value.

  Raises:
    ValueError: on an argument out of range, or a weights file that does not
      fit.
    FileNotFoundError: if `weights_path` does not exist.
  """
  _validation.check_choice("architecture", architecture, ARCHITECTURES)
  _validation.check_choice("norm", norm, NORMS)
  if architecture == "tinyimagenet" and norm != "group":
    raise ValueError(f"norm must be 'group' for architecture "
                     f"'tinyimagenet', got {norm!r}")
  if weights_path is not None and architecture != "tinyimagenet":
    raise ValueError(f"weights_path is only for architecture "
                     f"'tinyimagenet', got architecture {architecture!r}")
  num_classes = _validation.check_positive_int("num_classes", num_classes)
  num_batches = _validation.check_positive_int("num_batches", num_batches)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  seed = _validation.check_non_negative_int("seed", seed)
  _, filters, kernel_size = _FIRST_LAYER[architecture]
  side = check_side(side, architecture)
  if channels is None:
    channels = 1 if architecture == "mnist" else 3
  channels = _validation.check_positive_int("channels", channels)
  backbone = None
  if architecture == "tinyimagenet":
    tf.keras.utils.set_random_seed(seed)
    # Always a 3-channel backbone (what ImageNet weights fit); its stem conv
    # is replaced by W1, which takes `channels`.
    backbone = resnet18_backbone(side, 3, weights_path)
  kernel0 = tf.keras.initializers.GlorotUniform(seed=seed)(
      (kernel_size, kernel_size, channels, filters)).numpy()
  if weights_path is not None and channels == 3:
    kernel0 = backbone.get_layer(RESNET_STEM).kernel.numpy()
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
      num_draws=num_batches, forward_noise=forward_noise,
      seed=secret_seed(noise_seed), name="dp_autoencoder")
  if backbone is not None:
    body = resnet18_body(backbone)
  else:
    tf.keras.utils.set_random_seed(seed)
    body_fn = _mnist_body if architecture == "mnist" else _cifar10_body
    body = body_fn((output_size, output_size, filters), norm)
  model = StoBatchNet(autoencoder, body, num_classes, budget=budget,
                      name=f"stobatch_{architecture}")
  model(tf.zeros([1, side, side, channels]))
  return model, budget


def to_architecture_input(x: np.ndarray, architecture: str,
                          *, crop: str = "center",
                          rng: Optional[np.random.Generator] = None,
                          side: Optional[int] = None) -> np.ndarray:
  """Maps images in [0, 1] to the architecture's input in [-1, 1].

  * Pixels: ``2 x - 1`` (StoBatch's range; attack sizes are in these units).
  * Channels: grey images are repeated to 3 channels for "cifar10" and
    "tinyimagenet"; colour images are averaged to one channel for "mnist".
  * Size (S = `side`, by default `input_side(architecture)`: 28, 28, 64):
    images smaller than SxS (e.g. 8x8 digits) are resized (bilinear) to
    SxS. Larger ones are, for "tinyimagenet" (64x64 images with a smaller
    S for quick runs), resized (area) to SxS; for "mnist" and "cifar10"
    (32x32 CIFAR-10), cropped to SxS, at the centre or, with
    ``crop="random"`` and `rng`, at a random offset per image (a new view of
    the same example, not an extra copy: the number of examples does not
    change).

  Args:
    x: Images [N, H, W, C] in [0, 1].
    architecture: "mnist", "cifar10" or "tinyimagenet".
    crop: "center" or "random".
    rng: NumPy generator for random crops.
    side: The output side S; default the architecture's.

  Returns:
    float32 [N, S, S, C'] in [-1, 1].
  """
  side = check_side(side, architecture)
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
  elif architecture == "tinyimagenet" and x.shape[1:3] != (side, side):
    x = tf.image.resize(x, (side, side), method="area").numpy()
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
                          "input_side", "load_backbone_weights",
                          "resnet18_backbone", "resnet18_body",
                          "to_architecture_input")
