"""StoBatch's Keras layers: fixed Laplace noise, the DP auto-encoder conv, clipping.

The functional mechanism perturbs the coefficients of a polynomial objective
once; StoBatch realises it by adding Laplace noise to the input (``chi_x ~
Lap(Delta2 / (m epsilon'))``) and to the first convolution's output (``chi_h
~ Lap(2 Delta2 / (m epsilon'))``), scales from `tfdp.stobatch.budget`. The
training set is cut into fixed disjoint batches and the pure-DP argument over
them is parallel composition, which needs independent noise per batch: so
there is one draw per fixed batch (``num_draws`` of them, drawn before
training), each reused for its batch at every step and across epochs. (The
original code draws once for all batches; two batches perturbed by the same
draw differ by the exact difference of their data.) Certification at
inference instead needs fresh draws for its Monte Carlo votes, so the noise
layers can also draw anew at every call.

Each draw has the per-example shape (the input shape without the batch axis)
and is added to every example of its batch, as the original code feeds one
draw to every example; `draw` (one index per example) says whose batch.
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from tfdp import _validation
from tfdp.privacy import mechanisms

_LN2 = 0.6931471805599453


def _laplace(shape, scale: float, seed: Optional[tf.Tensor], dtype):
  # Lap(0, b) with b = Delta_1 / epsilon: pass Delta_1 = b, epsilon = 1.
  return mechanisms.laplace_noise(shape, l1_sensitivity=scale, epsilon=1.0,
                                  seed=seed, dtype=dtype)


def _check_bool(name: str, value: Any) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be True or False, got {value!r}")
  return value


def _check_optional_seed(value: Any) -> Optional[int]:
  if value is None:
    return None
  return _validation.check_non_negative_int("seed", value)


_TRAINING_MODES = ("fixed", "fresh")
FORWARD_NOISE = ("dp", "none")
_INFERENCE_MODES = ("fixed", "fresh", "none")


@tf.keras.utils.register_keras_serializable(package="tfdp")
class FixedLaplaceNoise(tf.keras.layers.Layer):
  """Adds Laplace noise ``Lap(0, scale)`` per coordinate: ``y = x + chi``.

  Modes, chosen separately for training and inference calls:

  * ``"fixed"`` (the functional mechanism): ``num_draws`` independent draws
    ``chi[d]`` of the per-example shape ``input_shape[1:]``, drawn when the
    layer is built and kept in a non-trainable variable (saved with the
    model, identical on every replica). Example i of a call gets
    ``chi[draw[i]]``, the draw of its fixed batch, at every call until
    `redraw`; without `draw`, every example gets ``chi[0]`` (allowed in
    training only with a single draw).
  * ``"fresh"``: a new ``chi`` of the full input shape at every call (Monte
    Carlo certification needs independent draws per vote).
  * ``"none"`` (inference only): the input is returned unchanged.

  ``training`` None counts as inference. The modes are read when a call is
  traced: to switch a trained model to fresh inference noise, rebuild it
  from its config with ``inference_noise="fresh"`` and copy the weights, or
  set the attribute before the first `predict` (Keras caches the traced
  predict function).

  Example:

  >>> layer = FixedLaplaceNoise(scale=0.5, seed=1)
  >>> x = tf.zeros([4, 3])
  >>> bool(tf.reduce_all(layer(x, training=True) == layer(x)))
  True
  >>> per_batch = FixedLaplaceNoise(scale=0.5, num_draws=2, seed=1)
  >>> y = per_batch(x, training=True, draw=tf.constant([0, 0, 1, 1]))
  >>> bool(tf.reduce_all(y[0] == y[1])), bool(tf.reduce_all(y[1] == y[2]))
  (True, False)
  >>> fresh = FixedLaplaceNoise(scale=0.5, inference_noise="fresh")
  >>> bool(tf.reduce_all(fresh(x) == fresh(x)))
  False

  Args:
    scale: The Laplace scale b > 0 (E|chi| = b, Var chi = 2 b^2).
    training_noise: "fixed" (default) or "fresh".
    inference_noise: "fixed" (default; StoBatch's model is the noisy one),
      "fresh" or "none".
    num_draws: The number of independent fixed draws (one per fixed
      batch), >= 1.
    seed: Optional int >= 0: the first fixed draws are a stateless function
      of it (fresh draws and `redraw` stay stateful).
    **kwargs: Passed to `tf.keras.layers.Layer`.
  """

  def __init__(self, scale: float, training_noise: str = "fixed",
               inference_noise: str = "fixed", num_draws: int = 1,
               seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    self.scale = _validation.check_positive("scale", scale)
    self.num_draws = _validation.check_positive_int("num_draws", num_draws)
    self.training_noise = _validation.check_choice(
        "training_noise", training_noise, _TRAINING_MODES)
    self.inference_noise = _validation.check_choice(
        "inference_noise", inference_noise, _INFERENCE_MODES)
    self.seed = _check_optional_seed(seed)
    self.noise = None

  def build(self, input_shape):
    shape = tf.TensorShape(input_shape)[1:]
    if not shape.is_fully_defined():
      raise ValueError(
          f"FixedLaplaceNoise '{self.name}' needs a fully defined per-example "
          f"input shape, got {tf.TensorShape(input_shape)}")
    seed = None if self.seed is None else tf.constant([self.seed, 0],
                                                      tf.int64)
    self.noise = self.add_weight(
        name="noise", shape=[self.num_draws] + shape.as_list(),
        dtype=self.dtype, trainable=False,
        initializer=lambda s, dtype=None: _laplace(s, self.scale, seed,
                                                   dtype or self.dtype))
    super().build(input_shape)

  def redraw(self) -> None:
    """Draws a new fixed noise tensor (stateful)."""
    if self.noise is not None:
      self.noise.assign(_laplace(self.noise.shape, self.scale, None,
                                 self.noise.dtype))

  def call(self, inputs, training=None, draw=None):
    """`inputs` plus the noise of the mode; `draw`: [batch] draw indices."""
    mode = self.training_noise if training else self.inference_noise
    if mode == "none":
      return inputs
    if mode == "fresh":
      return inputs + _laplace(tf.shape(inputs), self.scale, None,
                               inputs.dtype)
    if draw is None:
      if training and self.num_draws > 1:
        raise ValueError(
            f"FixedLaplaceNoise '{self.name}' holds {self.num_draws} draws, "
            "one per fixed batch: pass draw= (each example's batch index) in "
            "training, so that every batch gets its own noise")
      return inputs + tf.cast(self.noise[0], inputs.dtype)
    return inputs + tf.cast(tf.gather(self.noise, draw), inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(scale=self.scale, training_noise=self.training_noise,
                  inference_noise=self.inference_noise,
                  num_draws=self.num_draws, seed=self.seed)
    return config


def clip_hidden(x: tf.Tensor, limit: float = 1.0) -> tf.Tensor:
  """Clips to ``[-limit, limit]``; StoBatch clips the last hidden layer to [-1, 1].

  Delta3 = 2 |h_pi| assumes every last-hidden unit lies in [-1, 1].
  """
  limit = _validation.check_positive("limit", limit)
  return tf.clip_by_value(x, -limit, limit)


@tf.keras.utils.register_keras_serializable(package="tfdp")
class ClipHidden(tf.keras.layers.Layer):
  """``y = clip(x, -limit, limit)``: bounds the last hidden layer (Delta3).

  Example:

  >>> ClipHidden()(tf.constant([[-3.0, 0.5, 2.0]])).numpy().tolist()
  [[-1.0, 0.5, 1.0]]

  Args:
    limit: > 0; 1.0 as StoBatch requires for Delta3 = 2 |h_pi|.
    **kwargs: Passed to `tf.keras.layers.Layer`.
  """

  def __init__(self, limit: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    self.limit = _validation.check_positive("limit", limit)

  def call(self, inputs):
    return tf.clip_by_value(inputs, -self.limit, self.limit)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(limit=self.limit)
    return config


def _conv_output_size(size: int, kernel: int, stride: int, padding: str):
  if padding == "SAME":
    return -(-size // stride)
  return -(-(size - kernel + 1) // stride)


@tf.keras.utils.register_keras_serializable(package="tfdp")
class DPAutoencoderConv(tf.keras.layers.Layer):
  """StoBatch's first convolution, trained as a DP auto-encoder.

  Forward (what the rest of the network sees):

      x~ = x + chi_x,                      chi_x ~ Lap(input_noise_scale)
      h~ = conv(x~, W1, stride s) + b + chi_h,  chi_h ~ Lap(hidden_noise_scale)
      output = activation(h~)

  ``chi_x`` and ``chi_h`` are `FixedLaplaceNoise` layers: at training the
  fixed draw of each example's batch (`draw`; one draw per fixed batch,
  ``num_draws``); at inference each follows its own mode, "fixed", "fresh" or "none" (`input_inference_noise`,
  `hidden_inference_noise`). The original test code adds fresh input noise
  and no hidden noise at test time (``input_inference_noise="fresh",
  hidden_inference_noise="none"``); the defaults keep the fixed draws.

  The classifier path (`call` in training) adds those draws too with
  ``forward_noise="dp"`` (the paper's model); with ``"none"`` it runs the
  convolution on the clean input and only the reconstruction objective
  carries the draws. The draws protect W1 through that objective alone: W1
  gets no other gradient, and the output layer's Delta3 bounds each
  example's own term whatever its representation, so the classifier path's
  noise adds no privacy (one draw shared by a batch leaves the examples'
  differences exact). It does cost accuracy: at epsilon_ae = 1 on MNIST the
  draws (Laplace 2.7 on pixels in [-1, 1]) keep a "dp" model at chance. See
  docs/stobatch.md.

  Noise layout: independent draws per coordinate. The original code draws
  one input-noise value per pixel and copies it to the pixel's channels; we
  follow the per-coordinate Laplace mechanism instead.

  Reconstruction (`reconstruction_loss`), per example, with tied weights (the
  decoder uses W1 itself, as the paper's ``theta_1`` appears in both encoder
  and decoder and as the original code does with a transposed W1):

      r = conv_transpose(activation(h~), W1, stride s)       (logits, x's shape)
      R(x) = sum_j [ ln 2 + r_j (1/2 - x~_j) + r_j^2 / 8 ]     (order 2)
      R(x) = sum_j [ ln 2 + r_j (1/2 - x~_j) ]                 (order 1)

  These are the Taylor expansions around r = 0 of the cross-entropy
  ``sum_j [x_j log(1 + e^-r_j) + (1 - x_j) log(1 + e^r_j)]``:
  ``F(r) = ln 2 + (1/2 - x) r + r^2/8 + O(r^4)``. The functional mechanism
  enters through the data-dependent coefficients: ``x~`` (noisy input)
  multiplies r in the linear term and r is computed from ``h~`` (noisy
  hidden); ``1/8`` and ``ln 2`` do not depend on data and need no noise.

  What is pinned down and what is not:

  * The original code uses order 1 and the absolute value of the summand
    (``|relu(r) - r x~ + ln 2 - |r|/2| = |ln 2 + r (1/2 - x~)|``), a ReLU on
    the reconstruction and nearest-neighbour upsampling followed by a
    stride-1 conv with the transposed kernel as decoder. We could not pin
    down from the material here whether the paper keeps the quadratic term
    (its expansion is written to second order; a linear objective alone is
    unbounded below). Default: ``reconstruction_order=2`` without the
    absolute value; ``reconstruction_order=1, absolute_reconstruction=True``
    reproduces the code's objective.
  * Decoder: ``conv_transpose`` with W1 (the exact adjoint of the strided
    conv, i.e. ``theta_1^T h``) instead of the code's upsample + conv, and no
    decoder bias. This is a documented deviation from the code.

  Example:

  >>> layer = DPAutoencoderConv(8, 3, input_noise_scale=0.1,
  ...                           hidden_noise_scale=0.2, seed=0)
  >>> x = tf.random.uniform([2, 8, 8, 1])
  >>> layer(x).shape
  TensorShape([2, 4, 4, 8])
  >>> layer.reconstruction_loss(x).shape
  TensorShape([2])

  Args:
    filters: F, output channels, >= 1.
    kernel_size: k, the square kernel's side, >= 1.
    input_noise_scale: Laplace scale of chi_x, > 0 (``budget.input_noise_scale``).
    hidden_noise_scale: Laplace scale of chi_h, > 0
      (``budget.hidden_noise_scale``).
    strides: s, >= 1; 2 in StoBatch.
    padding: "same" or "valid".
    activation: A Keras activation applied to h~ ("relu" in the original).
    use_bias: Whether the conv has a bias.
    input_inference_noise: Inference mode of chi_x: "fixed", "fresh", "none".
    hidden_inference_noise: Inference mode of chi_h: "fixed", "fresh", "none".
    reconstruction_order: 1 or 2 (see above).
    absolute_reconstruction: Take |.| of each summand (the original code).
    kernel_initializer: Keras initializer of W1.
    num_draws: Independent fixed draws, one per fixed batch, >= 1.
    forward_noise: "dp" (the classifier path adds the fixed draws in
      training, as the paper) or "none" (only the reconstruction objective
      does).
    seed: Optional int >= 0 making the first fixed draws deterministic.
    **kwargs: Passed to `tf.keras.layers.Layer`.
  """

  def __init__(self, filters: int, kernel_size: int, *,
               input_noise_scale: float, hidden_noise_scale: float,
               strides: int = 2, padding: str = "same",
               activation: Any = "relu", use_bias: bool = True,
               input_inference_noise: str = "fixed",
               hidden_inference_noise: str = "fixed",
               reconstruction_order: int = 2,
               absolute_reconstruction: bool = False,
               kernel_initializer: Any = "glorot_uniform",
               num_draws: int = 1, forward_noise: str = "dp",
               seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    self.filters = _validation.check_positive_int("filters", filters)
    self.kernel_size = _validation.check_positive_int("kernel_size",
                                                      kernel_size)
    self.input_noise_scale = _validation.check_positive(
        "input_noise_scale", input_noise_scale)
    self.hidden_noise_scale = _validation.check_positive(
        "hidden_noise_scale", hidden_noise_scale)
    self.strides = _validation.check_positive_int("strides", strides)
    self.padding = _validation.check_choice(
        "padding", str(padding).lower(), ("same", "valid"))
    self.activation = tf.keras.activations.get(activation)
    self.use_bias = _check_bool("use_bias", use_bias)
    self.input_inference_noise = _validation.check_choice(
        "input_inference_noise", input_inference_noise, _INFERENCE_MODES)
    self.hidden_inference_noise = _validation.check_choice(
        "hidden_inference_noise", hidden_inference_noise, _INFERENCE_MODES)
    self.reconstruction_order = _validation.check_choice(
        "reconstruction_order", reconstruction_order, (1, 2))
    self.absolute_reconstruction = _check_bool("absolute_reconstruction",
                                               absolute_reconstruction)
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    self.num_draws = _validation.check_positive_int("num_draws", num_draws)
    self.forward_noise = _validation.check_choice(
        "forward_noise", forward_noise, FORWARD_NOISE)
    self.seed = _check_optional_seed(seed)
    self.input_noise = FixedLaplaceNoise(
        self.input_noise_scale, inference_noise=self.input_inference_noise,
        num_draws=self.num_draws, seed=self.seed, name="input_noise")
    self.hidden_noise = FixedLaplaceNoise(
        self.hidden_noise_scale, inference_noise=self.hidden_inference_noise,
        num_draws=self.num_draws,
        seed=None if self.seed is None else self.seed + 1,
        name="hidden_noise")

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4 or not input_shape[1:].is_fully_defined():
      raise ValueError(
          f"DPAutoencoderConv '{self.name}' needs inputs [batch, H, W, C] "
          f"with H, W, C known, got {input_shape}")
    _, height, width, channels = input_shape.as_list()
    self.kernel = self.add_weight(
        name="kernel",
        shape=(self.kernel_size, self.kernel_size, channels, self.filters),
        initializer=self.kernel_initializer, trainable=True)
    self.bias = (self.add_weight(name="bias", shape=(self.filters,),
                                 initializer="zeros", trainable=True)
                 if self.use_bias else None)
    pad = self.padding.upper()
    out_h = _conv_output_size(height, self.kernel_size, self.strides, pad)
    out_w = _conv_output_size(width, self.kernel_size, self.strides, pad)
    if out_h < 1 or out_w < 1:
      raise ValueError(
          f"DPAutoencoderConv '{self.name}': input {height}x{width} is too "
          f"small for kernel_size {self.kernel_size} with padding "
          f"{self.padding!r}")
    self.input_noise.build(input_shape)
    self.hidden_noise.build(
        tf.TensorShape([input_shape[0], out_h, out_w, self.filters]))
    super().build(input_shape)

  @property
  def output_size(self) -> Optional[int]:
    """h, the output's height (the h of Delta2 = C (h^2 + 2) k^2), once built."""
    if not self.built:
      return None
    return int(self.compute_output_shape(self._build_input_shape)[1])

  def redraw(self) -> None:
    """Redraws both fixed noise tensors."""
    self.input_noise.redraw()
    self.hidden_noise.redraw()

  def _convolve(self, x):
    h = tf.nn.conv2d(x, self.kernel, strides=self.strides,
                     padding=self.padding.upper())
    return tf.nn.bias_add(h, self.bias) if self.use_bias else h

  def _encode(self, inputs, training, draw):
    noisy_x = self.input_noise(inputs, training=training, draw=draw)
    h = self.hidden_noise(self._convolve(noisy_x), training=training,
                          draw=draw)
    return noisy_x, h

  def call(self, inputs, training=None, draw=None):
    """activation(h~); `draw`: each example's fixed-batch index, [batch]."""
    if training and self.forward_noise == "none":
      return self.activation(self._convolve(inputs))
    _, h = self._encode(inputs, training, draw)
    return self.activation(h)

  def reconstruction_logits(self, inputs, training=True, draw=None):
    """Decoder logits ``r = conv_transpose(activation(h~), W1)`` and ``x~``."""
    inputs = tf.convert_to_tensor(inputs, dtype=self.compute_dtype)
    if not self.built:
      self.build(inputs.shape)
    noisy_x, h = self._encode(inputs, training, draw)
    r = tf.nn.conv2d_transpose(
        self.activation(h), self.kernel, output_shape=tf.shape(inputs),
        strides=self.strides, padding=self.padding.upper())
    return r, noisy_x

  def reconstruction_loss(self, inputs, training=True,
                          draw=None) -> tf.Tensor:
    """Per-example Taylor reconstruction loss R(x) (see the class docstring).

    Args:
      inputs: x, [batch, H, W, C].
      training: Passed to the noise layers (True: the fixed draws).
      draw: Each example's fixed-batch index, [batch] (the draw it gets).

    Returns:
      A [batch] tensor; the trainer averages it over the batch.
    """
    r, noisy_x = self.reconstruction_logits(inputs, training=training,
                                            draw=draw)
    terms = _LN2 + r * (0.5 - noisy_x)
    if self.reconstruction_order == 2:
      terms = terms + tf.square(r) / 8.0
    if self.absolute_reconstruction:
      terms = tf.abs(terms)
    return tf.reduce_sum(terms, axis=[1, 2, 3])

  def compute_output_shape(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    pad = self.padding.upper()
    return tf.TensorShape([
        input_shape[0],
        _conv_output_size(input_shape[1], self.kernel_size, self.strides, pad),
        _conv_output_size(input_shape[2], self.kernel_size, self.strides, pad),
        self.filters])

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update(
        filters=self.filters, kernel_size=self.kernel_size,
        input_noise_scale=self.input_noise_scale,
        hidden_noise_scale=self.hidden_noise_scale, strides=self.strides,
        padding=self.padding,
        activation=tf.keras.activations.serialize(self.activation),
        use_bias=self.use_bias,
        input_inference_noise=self.input_inference_noise,
        hidden_inference_noise=self.hidden_inference_noise,
        reconstruction_order=self.reconstruction_order,
        absolute_reconstruction=self.absolute_reconstruction,
        kernel_initializer=tf.keras.initializers.serialize(
            self.kernel_initializer),
        num_draws=self.num_draws, forward_noise=self.forward_noise,
        seed=self.seed)
    return config
