"""The conditional GAN of PLG-MI: a ResNet G with conditional batch norm and a
spectrally normalised projection discriminator (Miyato & Koyama 2018).

This GAN belongs to the attacker: it is trained without privacy on public,
pseudo-labelled images (`tfdp.attacks.model_inversion`), so its layers need no
clipping rule.

* `ConditionalBatchNormalization`: batch norm without its own scale and
  offset, then ``gamma[y] * x_hat + beta[y]`` with one (gamma, beta) row per
  class: the label steers every block of G.
* `resnet_generator`: ``[z, y] -> images`` in [0, 1]: a dense layer to
  (H/4, W/4, 4f), two up-sampling residual blocks (CBN, ReLU, 2x nearest
  up-sampling, 3x3 conv, CBN, ReLU, 3x3 conv; a 1x1 conv shortcut), then BN,
  ReLU, a 3x3 conv and a sigmoid.
* `projection_discriminator`: ``[x, y] -> logit``: three residual blocks
  (two down-sampling by 2x2 average pooling), ReLU, global average pooling to
  features h, then ``logit = w . h + b + <V onehot(y), h>``; every conv and
  dense weight (V included) is spectrally normalised.
* `hinge_discriminator_loss` / `hinge_generator_loss`: the hinge loss,
  ``E[relu(1 - D(x, y))] + E[relu(1 + D(G(z, y'), y'))]`` for D and
  ``-E[D(G(z, y'), y')]`` for G.

Labels are integer class ids, shape [B]. Any image side divisible by 4
works (8x8 digits, 28x28 MNIST, 32x32, 64x64 faces).

Example:
  >>> g = resnet_generator((28, 28, 1), num_classes=10, width=8)
  >>> d = projection_discriminator((28, 28, 1), num_classes=10, width=8)
  >>> labels = tf.constant([0, 3])
  >>> images = g([tf.zeros([2, 128]), labels])
  >>> d([images, labels]).shape
  TensorShape([2, 1])
"""

from typing import Tuple

import tensorflow as tf

from tfdp import _validation


@tf.keras.utils.register_keras_serializable(package="tfdp")
class ConditionalBatchNormalization(tf.keras.layers.Layer):
  """Batch norm whose scale and offset are chosen by the example's label.

  ``out = gamma[y] * (x - mean) / sqrt(var + epsilon) + beta[y]``, mean and
  variance over every axis but the last (the batch's in training, the moving
  averages in inference), gamma initialised to ones and beta to zeros.

  Args:
    num_classes: rows of gamma and beta, >= 1.
    momentum: of the moving averages.
    epsilon: added to the variance.

  Example:
    >>> layer = ConditionalBatchNormalization(num_classes=3)
    >>> layer([tf.ones([2, 4, 4, 5]), tf.constant([0, 2])]).shape
    TensorShape([2, 4, 4, 5])
  """

  def __init__(self, num_classes: int, momentum: float = 0.9,
               epsilon: float = 1e-5, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = _validation.check_positive_int("num_classes",
                                                      num_classes)
    self.momentum = momentum
    self.epsilon = epsilon
    self.normalize = tf.keras.layers.BatchNormalization(
        momentum=momentum, epsilon=epsilon, center=False, scale=False)

  def build(self, input_shape):
    channels = int(input_shape[0][-1])
    self.gamma = self.add_weight(name="gamma",
                                 shape=[self.num_classes, channels],
                                 initializer="ones")
    self.beta = self.add_weight(name="beta",
                                shape=[self.num_classes, channels],
                                initializer="zeros")
    self.normalize.build(input_shape[0])
    super().build(input_shape)

  def call(self, inputs, training=None):
    x, labels = inputs
    normalized = self.normalize(x, training=training)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    # [B, C] -> [B, 1, ..., 1, C]: one row per example, broadcast over space.
    shape = tf.concat([tf.shape(labels),
                       tf.ones([x.shape.rank - 2], tf.int32), [-1]], 0)
    gamma = tf.reshape(tf.gather(self.gamma, labels), shape)
    beta = tf.reshape(tf.gather(self.beta, labels), shape)
    return gamma * normalized + beta

  def compute_output_shape(self, input_shape):
    return input_shape[0]

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "momentum": self.momentum, "epsilon": self.epsilon}


def _check_shape(image_shape: Tuple[int, ...]) -> Tuple[int, int, int]:
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
  height, width, channels = (int(s) for s in image_shape)
  if height % 4 or width % 4 or height < 4 or width < 4:
    raise ValueError(f"image_shape needs H and W divisible by 4 (two 2x "
                     f"up/down-samplings), got {image_shape}")
  return height, width, channels


def _generator_block(x, labels, filters: int, num_classes: int):
  """CBN-ReLU-up-conv-CBN-ReLU-conv, plus an up-sampled 1x1 conv shortcut."""
  h = ConditionalBatchNormalization(num_classes)([x, labels])
  h = tf.keras.layers.ReLU()(h)
  h = tf.keras.layers.UpSampling2D()(h)
  h = tf.keras.layers.Conv2D(filters, 3, padding="same")(h)
  h = ConditionalBatchNormalization(num_classes)([h, labels])
  h = tf.keras.layers.ReLU()(h)
  h = tf.keras.layers.Conv2D(filters, 3, padding="same")(h)
  shortcut = tf.keras.layers.UpSampling2D()(x)
  shortcut = tf.keras.layers.Conv2D(filters, 1)(shortcut)
  return tf.keras.layers.Add()([h, shortcut])


def resnet_generator(image_shape: Tuple[int, ...], num_classes: int, *,
                     latent_dim: int = 128, width: int = 32
                     ) -> tf.keras.Model:
  """G: ``[z [B, latent_dim], labels [B]] -> images [B, H, W, C]`` in [0, 1].

  Args:
    image_shape: (H, W, C), H and W divisible by 4.
    num_classes: K, the number of labels.
    latent_dim: the size of z, >= 1.
    width: f, the filters of the last block (the first has 2f), >= 1.

  Returns:
    An uncompiled Keras model (module docstring).
  """
  height, image_width, channels = _check_shape(image_shape)
  _validation.check_positive_int("num_classes", num_classes)
  _validation.check_positive_int("latent_dim", latent_dim)
  _validation.check_positive_int("width", width)
  z = tf.keras.Input([latent_dim], name="z")
  labels = tf.keras.Input([], dtype=tf.int32, name="labels")
  h = tf.keras.layers.Dense((height // 4) * (image_width // 4) * 4 * width)(z)
  h = tf.keras.layers.Reshape([height // 4, image_width // 4, 4 * width])(h)
  h = _generator_block(h, labels, 2 * width, num_classes)
  h = _generator_block(h, labels, width, num_classes)
  h = tf.keras.layers.BatchNormalization()(h)
  h = tf.keras.layers.ReLU()(h)
  images = tf.keras.layers.Conv2D(channels, 3, padding="same",
                                  activation="sigmoid")(h)
  return tf.keras.Model([z, labels], images, name="resnet_generator")


def _spectrally_normalized(kernel: tf.Variable, u: tf.Variable,
                           training) -> tf.Tensor:
  """``W / sigma(W)``, sigma by one power iteration (Miyato et al. 2018).

  With W reshaped to [fan_in, units] and the kept estimate u [1, units]:
  ``v = normalize(u W^T)``, ``u' = normalize(v W)``,
  ``sigma = v W u'^T``. u and v are held constant in the gradient, which
  flows through sigma; u' replaces u in training only.
  """
  units = kernel.shape[-1]
  matrix = tf.reshape(kernel, [-1, units])
  v = tf.math.l2_normalize(tf.matmul(u, matrix, transpose_b=True))
  new_u = tf.math.l2_normalize(tf.matmul(v, matrix))
  v, new_u = tf.stop_gradient(v), tf.stop_gradient(new_u)
  if training:
    u.assign(new_u)
  sigma = tf.matmul(tf.matmul(v, matrix), new_u, transpose_b=True)[0, 0]
  return kernel / sigma


class _SpectrallyNormalized:
  """Mixin for a Keras layer with `kernel`, `use_bias`, `bias`, `activation`:
  its kernel is divided by its spectral norm in every call."""

  def build(self, input_shape):
    super().build(input_shape)
    self.power_iteration_u = self.add_weight(
        name="power_iteration_u", shape=[1, self.kernel.shape[-1]],
        trainable=False,
        initializer=tf.keras.initializers.RandomNormal(stddev=1.0))

  def call(self, inputs, training=None):
    kernel = _spectrally_normalized(self.kernel, self.power_iteration_u,
                                    training)
    outputs = self._linear(inputs, kernel)
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    return self.activation(outputs)


@tf.keras.utils.register_keras_serializable(package="tfdp")
class SpectralConv2D(_SpectrallyNormalized, tf.keras.layers.Conv2D):
  """A Conv2D (channels last) whose kernel is divided by its spectral norm.

  Call it with ``training=True`` while training so that the power
  iteration's estimate advances. Keras' own `SpectralNormalization` wrapper
  (2.15) instead rescales the stored kernel in place, so no gradient flows
  through sigma, and fails inside a `tf.function`-traced functional model.

  Example:
    >>> layer = SpectralConv2D(4, 3, padding="same")
    >>> layer(tf.ones([1, 5, 5, 2]), training=True).shape
    TensorShape([1, 5, 5, 4])
  """

  def _linear(self, inputs, kernel):
    return self.convolution_op(inputs, kernel)


@tf.keras.utils.register_keras_serializable(package="tfdp")
class SpectralDense(_SpectrallyNormalized, tf.keras.layers.Dense):
  """A Dense layer (rank-2 inputs) whose kernel is divided by its spectral
  norm; as `SpectralConv2D`.

  Example:
    >>> SpectralDense(3)(tf.ones([2, 4]), training=True).shape
    TensorShape([2, 3])
  """

  def _linear(self, inputs, kernel):
    return tf.matmul(inputs, kernel)


def _discriminator_block(x, filters: int, *, downsample: bool, first: bool):
  """[ReLU]-conv-ReLU-conv[-pool], plus a 1x1 conv (and pool) shortcut.

  The first block takes raw images, so it starts with no ReLU and pools its
  shortcut before the 1x1 conv (SNGAN's "optimised" block).
  """
  h = x if first else tf.keras.layers.ReLU()(x)
  h = SpectralConv2D(filters, 3, padding="same")(h)
  h = tf.keras.layers.ReLU()(h)
  h = SpectralConv2D(filters, 3, padding="same")(h)
  shortcut = x
  if downsample:
    h = tf.keras.layers.AveragePooling2D()(h)
    if first:
      shortcut = tf.keras.layers.AveragePooling2D()(shortcut)
  if first or downsample or x.shape[-1] != filters:
    shortcut = SpectralConv2D(filters, 1)(shortcut)
    if downsample and not first:
      shortcut = tf.keras.layers.AveragePooling2D()(shortcut)
  return tf.keras.layers.Add()([h, shortcut])


def projection_discriminator(image_shape: Tuple[int, ...], num_classes: int,
                             *, width: int = 32) -> tf.keras.Model:
  """D: ``[images, labels [B]] -> logit [B, 1]``, spectrally normalised.

  Args:
    image_shape: (H, W, C), H and W divisible by 4.
    num_classes: K, the number of labels.
    width: f, the filters of the first block (the others have 2f), >= 1.

  Returns:
    An uncompiled Keras model (module docstring). Call it with
    ``training=True`` while training so that the spectral norms' power
    iterations advance.
  """
  _check_shape(image_shape)
  _validation.check_positive_int("num_classes", num_classes)
  _validation.check_positive_int("width", width)
  images = tf.keras.Input(image_shape, name="images")
  labels = tf.keras.Input([], dtype=tf.int32, name="labels")
  h = _discriminator_block(images, width, downsample=True, first=True)
  h = _discriminator_block(h, 2 * width, downsample=True, first=False)
  h = _discriminator_block(h, 2 * width, downsample=False, first=False)
  h = tf.keras.layers.ReLU()(h)
  h = tf.keras.layers.GlobalAveragePooling2D()(h)
  logit = SpectralDense(1)(h)
  # [B] -> [B, 1] first: CategoryEncoding reads a [1] input as one example.
  one_hot = tf.keras.layers.CategoryEncoding(num_classes,
                                             output_mode="one_hot")(
                                                 tf.keras.layers.Reshape([1])(
                                                     labels))
  embedded = SpectralDense(2 * width, use_bias=False,
                           name="label_embedding")(one_hot)
  projection = tf.keras.layers.Dot(axes=1)([embedded, h])
  outputs = tf.keras.layers.Add()([logit, projection])
  return tf.keras.Model([images, labels], outputs,
                        name="projection_discriminator")


def hinge_discriminator_loss(real_logits: tf.Tensor,
                             fake_logits: tf.Tensor) -> tf.Tensor:
  """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``, a scalar."""
  return (tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) +
          tf.reduce_mean(tf.nn.relu(1.0 + fake_logits)))


def hinge_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
  """``-mean(D(G(z, y), y))``, a scalar."""
  return -tf.reduce_mean(fake_logits)
