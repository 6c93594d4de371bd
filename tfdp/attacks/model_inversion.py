"""Pseudo-label-guided model inversion (PLG-MI; Yuan et al., AAAI 2023).

What an attacker who holds a trained classifier (white-box: its logits and
their gradients) and a public, unlabelled image set can reconstruct of each
private class:

1. `top_n_selection`: the target labels the public images; for each class k
   keep the n public images with the highest softmax probability of k
   (an image may be kept for several classes).
2. `InversionGAN`: a conditional GAN (`tfdp.attacks.conditional_gan`)
   trained on those pseudo-labelled images with the hinge loss, plus
   ``inversion_weight`` x the target's margin loss on augmented G(z, y) in
   G's step: G learns the public images' style *and* what the target calls
   class y. Adam 2e-4, betas (0, 0.9), `d_steps` D steps per G step.
3. `reconstruct`: for each class, optimise latent codes z (Adam 0.1, 600
   steps in the paper) to minimise the same margin loss through the frozen G.
4. `evaluate_reconstructions`: attack accuracy (top-1 / top-5 of a
   separately trained evaluation classifier, another architecture, on the
   reconstructions against the class they were made for), the KNN distance
   (mean over reconstructions of the squared L2 distance, in the evaluation
   classifier's features, to the nearest private image of the same class)
   and a Frechet distance to the private images in the same features
   (`tfdp.gan.evaluation.frechet_distance`).

The margin loss (`margin_loss`) of logits l and target class y is

    L(l, y) = -l_y + max_{k != y} l_k,

negative once the target prefers y; unlike the cross-entropy it does not
saturate, and it keeps pushing past the decision boundary.

The target must map images in [0, 1] to logits (not probabilities).

Example:
  >>> images = np.random.default_rng(0).random((40, 8, 8, 1), np.float32)
  >>> target = tf.keras.Sequential([tf.keras.layers.Flatten(),
  ...                               tf.keras.layers.Dense(3)])
  >>> selected = top_n_selection(target, images, n=5, num_classes=3)
  >>> selected.images.shape, selected.labels.tolist()[:6]
  ((15, 8, 8, 1), [0, 0, 0, 0, 0, 1])
"""

import dataclasses
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.attacks import conditional_gan


def margin_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Per-example ``-l_y + max_{k != y} l_k`` (module docstring), shape [B].

  Args:
    logits: [B, K] with K >= 2.
    labels: [B] integer classes.

  Returns:
    The margins, [B]; their gradient in l is ``e_{k*} - e_y`` with k* the
    best other class.
  """
  logits = tf.convert_to_tensor(logits)
  num_classes = logits.shape[-1]
  if num_classes is not None and num_classes < 2:
    raise ValueError(f"logits need >= 2 classes for a margin, got "
                     f"{num_classes}")
  one_hot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1],
                       dtype=logits.dtype)
  target_logit = tf.reduce_sum(one_hot * logits, axis=-1)
  # The target class is excluded from the max by moving it far below.
  others = logits - one_hot * 1e9
  return -target_logit + tf.reduce_max(others, axis=-1)


@dataclasses.dataclass(frozen=True)
class Selection:
  """Public images kept by `top_n_selection`, with their pseudo-labels.

  Attributes:
    images: [K * n, H, W, C], class 0's n images first.
    labels: [K * n] pseudo-labels.
    indices: [K * n] rows of the public set.
    probabilities: [K * n] the target's softmax of the pseudo-label.
  """
  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray
  probabilities: np.ndarray


def _logits(model: tf.keras.Model, images: np.ndarray,
            batch_size: int) -> np.ndarray:
  return np.asarray(model.predict(images, batch_size=batch_size, verbose=0),
                    np.float64)


def top_n_selection(target: tf.keras.Model, public_images: np.ndarray, *,
                    n: int, num_classes: int,
                    batch_size: int = 512) -> Selection:
  """For each class, the n public images the target finds most like it.

  Args:
    target: the attacked classifier (images to logits).
    public_images: [N, H, W, C], unlabelled; N >= n.
    n: images kept per class, >= 1 (30 in the paper, with 1,000 classes).
    num_classes: K, the target's classes.
    batch_size: for the target's predictions.

  Returns:
    The `Selection`, K * n images.
  """
  n = _validation.check_positive_int("n", n)
  _validation.check_positive_int("num_classes", num_classes)
  public_images = np.asarray(public_images, np.float32)
  if len(public_images) < n:
    raise ValueError(f"public_images holds {len(public_images)} images, fewer "
                     f"than n={n} per class")
  logits = _logits(target, public_images, batch_size)
  if logits.shape[-1] != num_classes:
    raise ValueError(f"the target gives {logits.shape[-1]} logits, not "
                     f"num_classes={num_classes}")
  shifted = logits - logits.max(axis=1, keepdims=True)
  probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
  # Stable sort on -p: ties keep the public set's order.
  indices = np.concatenate([
      np.argsort(-probabilities[:, k], kind="stable")[:n]
      for k in range(num_classes)])
  labels = np.repeat(np.arange(num_classes), n)
  return Selection(images=public_images[indices], labels=labels,
                   indices=indices,
                   probabilities=probabilities[indices, labels])


def default_augmentation(seed: Optional[int] = None) -> tf.keras.Sequential:
  """Small random zoom, rotation and shift, differentiable in the images.

  The paper's random resized crop, flip and rotation, less the flip (digits
  and text are not mirror-symmetric): the inversion loss is taken on
  augmented images so that G and z do not fit the target's quirks at one
  exact pixel position. Keras' image layers, constant (black) fill.
  """
  return tf.keras.Sequential([
      tf.keras.layers.RandomZoom((-0.15, 0.05), fill_mode="constant",
                                 seed=seed),
      tf.keras.layers.RandomRotation(8 / 360, fill_mode="constant",
                                     seed=seed),
      tf.keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant",
                                        seed=seed),
  ], name="inversion_augmentation")


class InversionGAN:
  """PLG-MI's conditional GAN, trained against a target (module docstring).

  Args:
    target: the attacked classifier, frozen (images in [0, 1] to logits).
    image_shape: (H, W, C), H and W divisible by 4.
    num_classes: K.
    latent_dim: size of z.
    width: G's and D's width (`conditional_gan`).
    inversion_weight: the margin loss's weight in G's loss (0.2 in the
      paper), >= 0; 0 trains a plain conditional GAN.
    d_steps: D steps per G step (5), >= 1.
    batch_size: real and generated images per step (64), >= 1.
    learning_rate: Adam's, for both (2e-4).
    augment: maps generated images to augmented ones (differentiably);
      default `default_augmentation()`.
    seed: seeds z, labels and the real batches' order.

  Example:
    >>> target = tf.keras.Sequential([tf.keras.layers.Flatten(),
    ...                               tf.keras.layers.Dense(3)])
    >>> gan = InversionGAN(target, (8, 8, 1), num_classes=3, width=4,
    ...                    latent_dim=8, batch_size=4, d_steps=1)
    >>> images = np.zeros((6, 8, 8, 1), np.float32)
    >>> sorted(gan.train(images, np.arange(6) % 3, steps=2))
    ['d_loss', 'g_adversarial', 'inversion']
  """

  def __init__(self, target: tf.keras.Model, image_shape, num_classes: int,
               *, latent_dim: int = 128, width: int = 16,
               inversion_weight: float = 0.2, d_steps: int = 5,
               batch_size: int = 64, learning_rate: float = 2e-4,
               augment: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               seed: int = 0):
    self.target = target
    self.num_classes = _validation.check_positive_int("num_classes",
                                                      num_classes)
    self.latent_dim = _validation.check_positive_int("latent_dim", latent_dim)
    self.inversion_weight = _validation.check_non_negative(
        "inversion_weight", inversion_weight)
    self.d_steps = _validation.check_positive_int("d_steps", d_steps)
    self.batch_size = _validation.check_positive_int("batch_size", batch_size)
    _validation.check_positive("learning_rate", learning_rate)
    self.seed = seed
    self.generator = conditional_gan.resnet_generator(
        image_shape, num_classes, latent_dim=latent_dim, width=width)
    self.discriminator = conditional_gan.projection_discriminator(
        image_shape, num_classes, width=width)
    self.augment = augment or default_augmentation(seed)
    self._g_optimizer = tf.keras.optimizers.Adam(learning_rate, 0.0, 0.9)
    self._d_optimizer = tf.keras.optimizers.Adam(learning_rate, 0.0, 0.9)
    self._rng = tf.random.Generator.from_seed(seed)
    self.steps = 0

  def _latents_and_labels(self, count: int):
    return (self._rng.normal([count, self.latent_dim]),
            self._rng.uniform([count], 0, self.num_classes, tf.int32))

  def _generator_step(self) -> Dict[str, tf.Tensor]:
    """hinge G loss + inversion_weight x mean margin on augmented G(z, y)."""
    z, labels = self._latents_and_labels(self.batch_size)
    variables = self.generator.trainable_variables
    with tf.GradientTape() as tape:
      fakes = self.generator([z, labels], training=True)
      adversarial = conditional_gan.hinge_generator_loss(
          self.discriminator([fakes, labels], training=True))
      inversion = tf.reduce_mean(margin_loss(
          self.target(self.augment(fakes, training=True), training=False),
          labels))
      loss = adversarial + self.inversion_weight * inversion
    self._g_optimizer.apply_gradients(
        zip(tape.gradient(loss, variables), variables))
    return {"g_adversarial": adversarial, "inversion": inversion}

  def _discriminator_step(self, real_images, real_labels) -> tf.Tensor:
    z, labels = self._latents_and_labels(tf.shape(real_images)[0])
    fakes = self.generator([z, labels], training=True)
    variables = self.discriminator.trainable_variables
    with tf.GradientTape() as tape:
      loss = conditional_gan.hinge_discriminator_loss(
          self.discriminator([real_images, real_labels], training=True),
          self.discriminator([fakes, labels], training=True))
    self._d_optimizer.apply_gradients(
        zip(tape.gradient(loss, variables), variables))
    return loss

  @tf.function
  def _iteration(self, real_images, real_labels) -> Dict[str, tf.Tensor]:
    """One G step, then `d_steps` D steps on the real batches [d_steps, B]."""
    metrics = self._generator_step()
    d_losses = [self._discriminator_step(real_images[i], real_labels[i])
                for i in range(self.d_steps)]
    metrics["d_loss"] = tf.add_n(d_losses) / self.d_steps
    return metrics

  def train(self, images: np.ndarray, labels: np.ndarray, steps: int, *,
            callback: Optional[Callable[[int, Dict[str, float]], None]] = None
            ) -> Dict[str, float]:
    """`steps` iterations (one G step and `d_steps` D steps each).

    Args:
      images: the pseudo-labelled public images (`Selection.images`).
      labels: their pseudo-labels.
      steps: G steps, >= 1.
      callback: called as ``callback(step, metrics)`` after each iteration
        (metrics: d_loss, g_adversarial, inversion as floats), e.g. for
        logging.

    Returns:
      The last iteration's metrics.
    """
    steps = _validation.check_positive_int("steps", steps)
    if len(images) == 0:
      raise ValueError("images is empty: nothing to train the GAN on")
    if len(images) != len(labels):
      raise ValueError(f"images and labels differ in length: {len(images)} "
                       f"vs {len(labels)}")
    batch = min(self.batch_size, len(images))
    real = (tf.data.Dataset.from_tensor_slices(
        (np.asarray(images, np.float32), np.asarray(labels, np.int32)))
            .shuffle(len(images), seed=self.seed + self.steps,
                     reshuffle_each_iteration=True)
            .repeat().batch(batch, drop_remainder=True)
            .batch(self.d_steps))
    metrics: Dict[str, float] = {}
    for real_images, real_labels in real.take(steps):
      metrics = {k: float(v) for k, v in
                 self._iteration(real_images, real_labels).items()}
      self.steps += 1
      if callback is not None:
        callback(self.steps, metrics)
    return metrics


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  """What `reconstruct` found.

  Attributes:
    images: [n, H, W, C], G(z*, y).
    labels: [n], the classes they were made for.
    initial_loss: [n] margin loss (un-augmented) at the starting z.
    final_loss: [n] margin loss (un-augmented) at z*.
  """
  images: np.ndarray
  labels: np.ndarray
  initial_loss: np.ndarray
  final_loss: np.ndarray


def reconstruct(generator: tf.keras.Model, target: tf.keras.Model,
                labels: np.ndarray, *, steps: int = 600,
                learning_rate: float = 0.1,
                augment: Optional[Callable[..., tf.Tensor]] = None,
                views: int = 2, seed: int = 0) -> Reconstruction:
  """Optimises one latent code per label to minimise the margin loss.

  Each step's loss is the mean over `views` augmented copies of G(z, y) of
  ``margin_loss(target(view), y)``, summed over the codes (so each code's
  step does not depend on how many there are); Adam on z only, G and the
  target frozen (inference mode).

  Args:
    generator: ``[z, labels] -> images``, e.g. `InversionGAN.generator`.
    target: the attacked classifier (images to logits).
    labels: [n] classes to reconstruct.
    steps: Adam steps, >= 1 (600 in the paper).
    learning_rate: Adam's (0.1 in the paper).
    augment: as `InversionGAN`'s; default `default_augmentation(seed)`.
    views: augmented copies per step, >= 1.
    seed: seeds the starting codes z ~ N(0, I).

  Returns:
    The `Reconstruction`.
  """
  steps = _validation.check_positive_int("steps", steps)
  views = _validation.check_positive_int("views", views)
  _validation.check_positive("learning_rate", learning_rate)
  labels = np.asarray(labels, np.int32)
  if labels.ndim != 1 or len(labels) == 0:
    raise ValueError(f"labels must be a non-empty vector, got shape "
                     f"{labels.shape}")
  augment = augment or default_augmentation(seed)
  latent_dim = generator.inputs[0].shape[-1]
  z = tf.Variable(tf.random.stateless_normal([len(labels), latent_dim],
                                             [seed, 0]))
  optimizer = tf.keras.optimizers.Adam(learning_rate)
  y = tf.constant(labels)

  def plain_loss() -> tf.Tensor:
    images = generator([z, y], training=False)
    return margin_loss(target(images, training=False), y)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      images = generator([z, y], training=False)
      loss = tf.add_n([
          tf.reduce_sum(margin_loss(
              target(augment(images, training=True), training=False), y))
          for _ in range(views)]) / views
    optimizer.apply_gradients([(tape.gradient(loss, z), z)])

  initial = plain_loss().numpy()
  for _ in range(steps):
    step()
  return Reconstruction(
      images=generator([z, y], training=False).numpy(), labels=labels,
      initial_loss=initial, final_loss=plain_loss().numpy())


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Fraction of rows whose label is among their k largest logits."""
  k = min(_validation.check_positive_int("k", k), logits.shape[-1])
  top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def knn_distance(features: np.ndarray, labels: np.ndarray,
                 private_features: np.ndarray,
                 private_labels: np.ndarray) -> float:
  """Mean over rows of the squared L2 distance to the nearest private row of
  the same label (in the same feature space)."""
  distances = []
  for feature, label in zip(features, labels):
    same = private_features[private_labels == label]
    if len(same) == 0:
      raise ValueError(f"no private example of class {label} to measure "
                       "the KNN distance against")
    distances.append(np.min(np.sum((same - feature) ** 2, axis=1)))
  return float(np.mean(distances))


def evaluate_reconstructions(evaluation_model: tf.keras.Model,
                             images: np.ndarray, labels: np.ndarray,
                             private_images: np.ndarray,
                             private_labels: np.ndarray, *,
                             features_layer: str = "features"
                             ) -> Dict[str, float]:
  """Attack accuracy, KNN distance and Frechet distance (module docstring).

  Args:
    evaluation_model: a classifier trained on the private set, of another
      architecture than the target, with a layer named `features_layer`
      (`tfdp.gan.evaluation.train_classifier` builds one).
    images: [n, H, W, C] reconstructions (or any images claimed for labels).
    labels: [n] the classes they stand for.
    private_images: the private set.
    private_labels: its labels.
    features_layer: the evaluation model's feature layer.

  Returns:
    {"top1", "top5", "knn_distance", "frechet_distance"}.
  """
  # Imported here: tfdp.gan imports the clipping engine, which the attack
  # itself does not need.
  from tfdp.gan import evaluation  # pylint: disable=g-import-not-at-top

  if len(images) == 0:
    raise ValueError("images is empty: nothing to evaluate")
  extractor = tf.keras.Model(evaluation_model.inputs,
                             [evaluation_model.get_layer(features_layer).output,
                              evaluation_model.outputs[0]])
  features, logits = extractor.predict(images, batch_size=512, verbose=0)
  private_features, _ = extractor.predict(private_images, batch_size=512,
                                          verbose=0)
  features = features.astype(np.float64)
  private_features = private_features.astype(np.float64)
  return {
      "top1": top_k_accuracy(logits, labels, 1),
      "top5": top_k_accuracy(logits, labels, 5),
      "knn_distance": knn_distance(features, labels, private_features,
                                   np.asarray(private_labels)),
      "frechet_distance": evaluation.frechet_distance(private_features,
                                                      features),
  }
