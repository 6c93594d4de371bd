"""The DP-GAN trainer: a private discriminator, a post-processed generator.

Only the discriminator D reads private images. One D step computes

    grad_D = (S_real + N(0, (sigma C)^2 I)) / B  +  F_fake / B
             [+ gp_weight * grad of the WGAN-GP penalty on mean samples]

where S_real is the clipped sum of the per-example gradients of D's loss on
a Poisson-sampled batch of real images (expected size B; the fast engine,
`tfdp.clipping.fast`) and the Gaussian noise is added by a
`tfdp.optimizers.DPAdam`, whose step count the accountant follows. Only the
real pass needs clipping and noise. The fake pass's loss is a function of
D's current weights (already private), of G and of fresh latent noise, and
no private image enters it; the same holds for the gradient penalty,
computed between G's samples and mean samples, which are themselves a
private release (`tfdp.gan.mean_samples`). F_fake is nevertheless, by
default (`clip_fake=True`), the sum of the fake examples' gradients clipped
to the same bound, without noise: clipping shrinks the real term, and an
unclipped fake term then outweighs it (on MNIST-8k at epsilon 10 with
C = 4: downstream accuracy 70.8 % after 2,000 steps with the fake pass
clipped; without, 47 % and 49 % after 1,000 and 3,000 steps). That clipping is for balance, not privacy. G's step
differentiates D's outputs on G's own samples, so G, and every sample drawn
from it, is post-processing of D's private releases: it costs no privacy.

Modes (`mode`):

* ``gc``: per-example clipping of the real pass to one L2 bound C.
* ``adaptive``: per-layer clipping; each layer's bound is
  ``C_l = adaptive_scalar * mean_i ||g_i^(l)||`` measured on a batch of mean
  samples (with random labels) at the current D, hence a function of
  private releases only. The clipped sum then has L2 sensitivity
  ``sqrt(sum_l C_l^2)``, and the noise is sigma times that.
* ``is`` (immediate sensitivity, as ported): noise
  ``N(0, (sigma IS)^2)`` on the mean real gradient ``g`` with
  ``IS = max_i ||d ||g|| / d x_i||``. IS is computed from the batch itself:
  the noise scale leaks the data, so this is NOT differential privacy.
  It runs only with ``allow_no_dp=True``, and `spent()` returns None.
* ``none``: no clipping, no noise (the non-private baseline); only with
  ``allow_no_dp=True``.

Budget: DP-SGD on D (Poisson sampling, noise multiplier sigma, one step per
D update) composed with the mean samples' Gaussian release when there is
one, in one dp_accounting event (`tfdp.privacy.PrivacyAccountant` with
``release_noise_multiplier``).

Example:
  >>> x = np.random.default_rng(0).random((256, 8, 8, 1), np.float32)
  >>> y = np.arange(256) % 10
  >>> gan = DPGAN.build("mlp", (8, 8, 1), num_classes=10, noise_multiplier=1.0,
  ...                   expected_batch_size=64, dataset_size=256)
  >>> losses = gan.discriminator_step(x[:64], y[:64])
  >>> losses = gan.generator_step()
  >>> gan.spent().steps
  1
"""

from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp import checkpointing
from tfdp import clipping
from tfdp import optimizers
from tfdp import privacy
from tfdp.clipping import fast
from tfdp.gan import evaluation
from tfdp.gan import losses
from tfdp.gan import models

MODES = ("gc", "adaptive", "is", "none")
PRIVATE_MODES = ("gc", "adaptive")
NO_DP_NOTE = "no DP guarantee"
# Floor on adaptive clip bounds: a layer whose gradients vanish on the mean
# samples still gets a (tiny) positive bound.
_MIN_LAYER_CLIP = 1e-6


def _replica_mean(values: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """The mean of `values` over the replicas in sync (itself with one)."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return values
  return context.all_reduce(tf.distribute.ReduceOp.MEAN, values)


def _check_built_in_scope(strategy: tf.distribute.Strategy,
                          *networks: tf.keras.Model) -> None:
  if strategy.num_replicas_in_sync == 1:
    return
  for network in networks:
    outside = [v.name for v in network.variables
               if not strategy.extended.variable_created_in_scope(v)]
    if outside:
      raise ValueError(
          f"{network.name} was built outside the strategy's scope (e.g. "
          f"{outside[0]}): build G and D in `with strategy.scope():`, or "
          "use DPGAN.build(..., strategy=strategy)")


class DPGAN(tf.Module):
  """A GAN whose discriminator is trained with DP (see the module docstring)."""

  def __init__(self,
               generator: tf.keras.Model,
               discriminator: tf.keras.Model,
               *,
               num_classes: int,
               latent_dim: int,
               noise_multiplier: float,
               expected_batch_size: int,
               dataset_size: int,
               conditioning: str = "acgan",
               loss: str = "gan",
               mode: str = "gc",
               l2_norm_clip: float = 4.0,
               delta: float = 1e-5,
               learning_rate: float = 2e-4,
               beta_1: float = 0.5,
               mean_samples: Optional[np.ndarray] = None,
               mean_noise_multiplier: Optional[float] = None,
               adaptive_scalar: float = 1.5,
               gp_weight: float = 10.0,
               clip_fake: bool = True,
               accountant: str = privacy.PLD,
               allow_no_dp: bool = False,
               strategy: Optional[tf.distribute.Strategy] = None):
    """Builds the trainer.

    Args:
      generator: G, from `tfdp.gan.models.generator` (or the same inputs).
      discriminator: D, from `tfdp.gan.models.discriminator`.
      num_classes: K.
      latent_dim: the size of G's latent input.
      noise_multiplier: sigma >= 0 (private modes; for ``is`` the noise over
        the immediate sensitivity).
      expected_batch_size: B, the expected real batch size (Poisson
        sampling), also the size of every fake batch.
      dataset_size: N, the number of private images.
      conditioning: "none", "cgan" or "acgan" (as D and G were built).
      loss: "gan" or "wgan_gp".
      mode: "gc", "adaptive", "is" or "none".
      l2_norm_clip: C > 0 for ``gc``.
      delta: the target delta in (0, 1).
      learning_rate: Adam's learning rate for D and G.
      beta_1: Adam's beta_1 for D and G.
      mean_samples: the released mean samples [k, H, W, C]; needed by
        ``adaptive`` and ``wgan_gp``.
      mean_noise_multiplier: their composed noise multiplier
        (`tfdp.gan.mean_samples.release`); needed with `mean_samples`.
      adaptive_scalar: the factor on mean per-layer norms, > 0.
      gp_weight: the weight of the gradient penalty, >= 0.
      clip_fake: in the private modes, also clip the fake pass's
        per-example gradients (no noise), to keep it on the scale of the
        clipped real pass.
      accountant: "pld" or "rdp".
      allow_no_dp: must be True for the modes without a DP guarantee
        (``is``, ``none``).
      strategy: the `tf.distribute.Strategy` to train under (default: the
        current one). G and D must have been built in its scope
        (`build` does that). With several replicas, every step runs on all
        of them: each replica clips its share of the real batch (which must
        come as distributed values, e.g. from
        `tfdp.data.distributed_poisson_batches`), the first adds the noise
        once, and each generates 1/R of the fake batch.

    Raises:
      ValueError: naming the argument that is missing or out of range.
    """
    super().__init__(name="dp_gan")
    _validation.check_choice("mode", mode, MODES)
    _validation.check_choice("loss", loss, losses.LOSSES)
    _validation.check_choice("conditioning", conditioning,
                             models.CONDITIONINGS)
    if mode not in PRIVATE_MODES and not allow_no_dp:
      raise ValueError(
          f"mode={mode!r} gives {NO_DP_NOTE} ("
          + ("its noise scale is computed from the private batch itself"
             if mode == "is" else "no clipping, no noise") +
          "). Use mode='gc' or 'adaptive' for differential privacy, or pass "
          "allow_no_dp=True to run it knowingly.")
    needs_mean_samples = mode == "adaptive" or loss == "wgan_gp"
    if needs_mean_samples and (mean_samples is None or
                               mean_noise_multiplier is None):
      raise ValueError(
          "mean_samples and mean_noise_multiplier are required with "
          f"mode={mode!r}, loss={loss!r}: adaptive clipping and the gradient "
          "penalty use mean samples (tfdp.gan.mean_samples.release) instead "
          "of raw private images, and their privacy cost is accounted")
    if (mean_samples is None) != (mean_noise_multiplier is None):
      raise ValueError("pass mean_samples and mean_noise_multiplier together "
                       "(the release and its cost)")
    self.generator = generator
    self.discriminator = discriminator
    self.num_classes = _validation.check_positive_int("num_classes",
                                                      num_classes)
    self.latent_dim = _validation.check_positive_int("latent_dim", latent_dim)
    self.noise_multiplier = _validation.check_non_negative(
        "noise_multiplier", noise_multiplier)
    self.batch_size = _validation.check_positive_int("expected_batch_size",
                                                     expected_batch_size)
    self.conditioning, self.loss, self.mode = conditioning, loss, mode
    self.l2_norm_clip = _validation.check_positive("l2_norm_clip",
                                                   l2_norm_clip)
    self.adaptive_scalar = _validation.check_positive("adaptive_scalar",
                                                      adaptive_scalar)
    self.gp_weight = _validation.check_non_negative("gp_weight", gp_weight)
    self.clip_fake = bool(clip_fake)
    self.mean_samples = (None if mean_samples is None else
                         tf.constant(mean_samples, tf.float32))
    self.strategy = strategy or tf.distribute.get_strategy()
    self.replicas = self.strategy.num_replicas_in_sync
    _check_built_in_scope(self.strategy, generator, discriminator)
    if mode == "is" and self.replicas > 1:
      raise ValueError(
          "mode='is' runs on one replica only (its noise scale is the "
          f"batch's own sensitivity), got a strategy with {self.replicas}")
    # Each replica makes 1/R of the fake batch (at least one example).
    self.fakes_per_replica = max(1, self.batch_size // self.replicas)
    adam = dict(learning_rate=learning_rate, beta_1=beta_1)
    with self.strategy.scope():
      self._build_optimizers(adam, mode, noise_multiplier,
                             expected_batch_size, l2_norm_clip)
      # Latent draws and fake labels: in a strategy's scope the generator
      # gives every replica its own stream (tf.random.Generator), so the
      # replicas' fakes differ even when the workers share a global seed.
      self._rng = tf.random.Generator.from_seed(int(tf.random.uniform(
          [], maxval=2**62, dtype=tf.int64)))
    self.accountant = None
    if mode in PRIVATE_MODES:
      self.accountant = privacy.PrivacyAccountant(
          noise_multiplier, delta, batch_size=expected_batch_size,
          dataset_size=dataset_size, accountant=accountant,
          release_noise_multiplier=mean_noise_multiplier)
      self.accountant.track(self.d_optimizer)
    self._d_step = tf.function(self._distributed_discriminator_step,
                               reduce_retracing=True)
    self._g_step = tf.function(self._distributed_generator_step)

  def _build_optimizers(self, adam, mode, noise_multiplier,
                        expected_batch_size, l2_norm_clip):
    self.g_optimizer = tf.keras.optimizers.Adam(**adam)
    if mode in PRIVATE_MODES:
      # Adaptive clipping scales the clipped sum to sensitivity 1 before the
      # optimizer's noise and back after it (`_real_gradients`).
      self.d_optimizer = optimizers.DPAdam(
          l2_norm_clip=l2_norm_clip if mode == "gc" else 1.0,
          noise_multiplier=noise_multiplier,
          expected_batch_size=expected_batch_size, **adam)
    else:
      self.d_optimizer = tf.keras.optimizers.Adam(**adam)

  @classmethod
  def build(cls, architecture: str, image_shape: Tuple[int, ...], *,
            num_classes: int, conditioning: str = "acgan",
            latent_dim: int = 100, width: int = 128,
            generator_width: Optional[int] = None,
            strategy: Optional[tf.distribute.Strategy] = None,
            **kwargs) -> "DPGAN":
    """A trainer with G and D from `tfdp.gan.models` (kwargs: `__init__`'s).

    `width` sizes D, and G too unless `generator_width` is given (G is not
    private: its size costs no privacy; D's adds noise dimensions). G and D
    are built in `strategy`'s scope.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
      generator = models.generator(
          architecture, image_shape, num_classes, conditioning=conditioning,
          latent_dim=latent_dim, width=generator_width or width)
      discriminator = models.discriminator(
          architecture, image_shape, num_classes, conditioning=conditioning,
          width=width)
    return cls(generator, discriminator, num_classes=num_classes,
               latent_dim=latent_dim, conditioning=conditioning,
               strategy=strategy, **kwargs)

  # Inputs and outputs.

  def _d_inputs(self, images: tf.Tensor, labels: tf.Tensor):
    if self.conditioning == "cgan":
      return [images, tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)]
    return images

  def _random_labels(self, count) -> tf.Tensor:
    return self._rng.uniform([count], 0, self.num_classes, dtype=tf.int64)

  def _generate(self, labels: tf.Tensor, training: bool) -> tf.Tensor:
    z = self._rng.normal([tf.shape(labels)[0], self.latent_dim])
    if not models.is_conditional(self.conditioning):
      return self.generator(z, training=training)
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
    return self.generator([z, one_hot], training=training)

  def generate(self, labels) -> np.ndarray:
    """Samples from G, one per label (labels ignored without conditioning)."""
    labels = tf.convert_to_tensor(np.asarray(labels, np.int64))
    return self._generate(labels, training=False).numpy()

  def realness(self, images, labels=None) -> np.ndarray:
    """D's logit of "real" per image (labels needed for cgan)."""
    images = tf.convert_to_tensor(np.asarray(images, np.float32))
    if labels is None:
      if self.conditioning == "cgan":
        raise ValueError("labels are required to score images with a cgan "
                         "discriminator")
      labels = tf.zeros([tf.shape(images)[0]], tf.int64)
    outputs = self.discriminator(self._d_inputs(images, labels),
                                 training=False)
    return outputs[:, 0].numpy()

  # Privacy.

  @property
  def is_private(self) -> bool:
    """Whether the mode gives a DP guarantee (``gc``, ``adaptive``)."""
    return self.accountant is not None

  def spent(self) -> Optional[privacy.PrivacySpent]:
    """The privacy spent so far; None for the modes without a DP guarantee."""
    return self.accountant.spent() if self.is_private else None

  def budget(self) -> Optional[Dict[str, float]]:
    """Epsilon at delta: in total and, with mean samples, each part alone.

    Returns:
      None for the modes without a DP guarantee; else {"total": ...} and,
      where mean samples were released, "discriminator" (D's steps alone)
      and "mean_samples" (the release alone). The total is their
      composition, tighter than the sum of the parts.
    """
    spent = self.spent()
    if spent is None:
      return None
    parts = {"total": spent.epsilon}
    release = spent.release_noise_multiplier
    if release is not None:
      config = self.accountant.get_config()
      kwargs = dict(batch_size=config["batch_size"],
                    dataset_size=config["dataset_size"],
                    accountant=config["accountant"])
      parts["discriminator"] = privacy.compute_epsilon(
          spent.noise_multiplier, spent.steps, spent.delta, **kwargs).epsilon
      parts["mean_samples"] = privacy.compute_epsilon(
          spent.noise_multiplier, 0, spent.delta,
          release_noise_multiplier=release, **kwargs).epsilon
    return parts

  def sample_grid(self, per_class: int = 10) -> np.ndarray:
    """`per_class` samples of each class, one class per row, tiled."""
    labels = np.repeat(np.arange(self.num_classes), per_class)
    return evaluation.sample_grid(self.generate(labels), columns=per_class)

  def train(self,
            batches: Iterator,
            steps: int,
            *,
            d_steps: int = 1,
            log_dir: Optional[str] = None,
            checkpoint_dir: Optional[str] = None,
            log_every: int = 100,
            grid_every: int = 500,
            on_log: Optional[Callable[[int, Dict[str, float]], None]] = None
            ) -> int:
    """Trains until G has taken `steps` steps, each after `d_steps` D steps.

    With `checkpoint_dir`, the latest checkpoint there is restored first, so
    only the steps not taken yet run (the accountant rides with D's
    optimizer: restored steps are counted once), and a checkpoint is saved
    every `log_every` steps and at the end.

    Args:
      batches: yields (images, labels) real batches drawn by Poisson
        sampling at `expected_batch_size` (e.g.
        ``iter(tfdp.data.poisson_batches(x, y, B).dataset.repeat())``; with
        several replicas, ``iter(tfdp.data.distributed_poisson_batches(
        strategy, x, y, B).dataset)``).
      steps: the total number of G steps, >= 1.
      d_steps: D steps (private steps) per G step, >= 1.
      log_dir: TensorBoard scalars (losses, epsilon) every `log_every`
        steps and, for a conditional G, a sample grid every `grid_every`.
      checkpoint_dir: where checkpoints go (and are resumed from); under
        several workers the chief writes it and every worker restores from
        it (`tfdp.checkpointing.TrainingCheckpoints`).
      log_every: steps between logs and checkpoints, >= 1.
      grid_every: steps between sample grids, >= 1.
      on_log: called with (step, losses) every `log_every` steps.

    Returns:
      The number of G steps this call took.
    """
    _validation.check_positive_int("steps", steps)
    _validation.check_positive_int("d_steps", d_steps)
    _validation.check_positive_int("log_every", log_every)
    _validation.check_positive_int("grid_every", grid_every)
    checkpoints = None
    if checkpoint_dir is not None:
      checkpoints = checkpointing.TrainingCheckpoints(
          self.checkpoint(), checkpoint_dir, self.strategy, max_to_keep=2)
      checkpoints.restore_latest()
    writer = (tf.summary.create_file_writer(log_dir) if log_dir is not None
              else tf.summary.create_noop_writer())
    first = step = int(self.g_optimizer.iterations.numpy())
    while step < steps:
      for _ in range(d_steps):
        step_losses = self.discriminator_step(*next(batches))
      step_losses.update(self.generator_step())
      step += 1
      last = step == steps
      with writer.as_default(step=step):
        if step % log_every == 0 or last:
          for name, value in step_losses.items():
            tf.summary.scalar(f"loss/{name}", value)
          if self.is_private:
            tf.summary.scalar("privacy/epsilon", self.spent().epsilon)
          if checkpoints is not None:
            checkpoints.save(step)
          if on_log is not None:
            on_log(step, step_losses)
        if ((step % grid_every == 0 or last) and
            models.is_conditional(self.conditioning)):
          tf.summary.image("samples", self.sample_grid()[None])
    return step - first

  def checkpoint(self) -> tf.train.Checkpoint:
    """G, D and both optimizers (the accountant rides with D's optimizer)."""
    return tf.train.Checkpoint(generator=self.generator,
                               discriminator=self.discriminator,
                               g_optimizer=self.g_optimizer,
                               d_optimizer=self.d_optimizer)

  # Steps.

  def discriminator_step(self, images, labels) -> Dict[str, float]:
    """One D update on a real batch (drawn by Poisson sampling).

    With several replicas, `images` and `labels` must be distributed values
    (each replica's share of the batch); a plain batch would be clipped on
    every replica and count each example R times.
    """
    if self.replicas > 1:
      if not isinstance(images, tf.distribute.DistributedValues):
        raise ValueError(
            f"images must be distributed over the {self.replicas} replicas "
            "(each replica's share of the Poisson batch), got a plain "
            f"{type(images).__name__}: draw the batches with "
            "tfdp.data.distributed_poisson_batches(strategy, x, y, B)")
    else:
      images = tf.convert_to_tensor(images, tf.float32)
      labels = tf.convert_to_tensor(labels, tf.int64)
    return {k: float(v) for k, v in self._d_step(images, labels).items()}

  def generator_step(self) -> Dict[str, float]:
    """One G update on a fresh batch of latent noise and labels."""
    return {k: float(v) for k, v in self._g_step().items()}

  def _real_loss_fn(self, labels, outputs):
    return losses.discriminator_real(self.loss, self.conditioning, labels,
                                     outputs)

  def _fake_loss_fn(self, labels, outputs):
    return losses.discriminator_fake(self.loss, self.conditioning, labels,
                                     outputs)

  def _mean_sample_batch(self) -> tf.Tensor:
    count = tf.shape(self.mean_samples)[0]
    indices = self._rng.uniform([self.fakes_per_replica], 0, count,
                                dtype=tf.int32)
    return tf.gather(self.mean_samples, indices)

  def _layer_clips(self) -> Optional[Dict[str, tf.Tensor]]:
    """Adaptive mode's C_l from mean samples (random labels); else None."""
    if self.mode != "adaptive":
      return None
    anchors = self._mean_sample_batch()
    labels = self._random_labels(self.fakes_per_replica)
    norms = fast.per_layer_norms(self.discriminator,
                                 self._d_inputs(anchors, labels), labels,
                                 self._real_loss_fn)
    # Every replica must clip to the same bounds (the noise is calibrated to
    # one sensitivity): average the replicas' means.
    means = _replica_mean({name: tf.reduce_mean(n)
                           for name, n in norms.items()})
    return {name: tf.maximum(self.adaptive_scalar * mean, _MIN_LAYER_CLIP)
            for name, mean in means.items()}

  def _clipped_sum(self, images, labels, loss_fn, clips):
    """sum_i of clipped g_i: to C (gc) or per layer to `clips` (adaptive)."""
    inputs = self._d_inputs(images, labels)
    if clips is None:
      return fast.clipped_gradients(self.discriminator, inputs, labels,
                                    loss_fn, self.l2_norm_clip)
    return fast.per_layer_clipped_gradients(self.discriminator, inputs,
                                            labels, loss_fn, clips)

  def _real_gradients(self, images, labels, clips=None):
    """The private (or, for is / none, unprotected) real-pass gradient."""
    d = self.discriminator
    if self.mode in PRIVATE_MODES:
      result = self._clipped_sum(images, labels, self._real_loss_fn, clips)
      sums = clipping.check_finite_norms(
          result.norms, self.d_optimizer.iterations, result.gradient_sum)
      if clips is None:
        return self.d_optimizer.noisy_average(sums)
      # Noise sigma sqrt(sum C_l^2): scale to sensitivity 1 and back.
      sensitivity = fast.per_layer_sensitivity(clips)
      noisy = self.d_optimizer.noisy_average([s / sensitivity for s in sums])
      return [g * sensitivity for g in noisy]
    count = tf.maximum(tf.cast(tf.shape(images)[0], tf.float32), 1.0)
    with tf.GradientTape() as outer:
      outer.watch(images)
      with tf.GradientTape() as inner:
        loss = tf.reduce_sum(self._real_loss_fn(
            labels, d(self._d_inputs(images, labels)))) / count
      gradients = inner.gradient(loss, d.trainable_variables,
                                 unconnected_gradients="zero")
      norm = tf.linalg.global_norm(gradients)
    if self.mode == "none":
      # Summed over the replicas: each gives its share of the mean.
      return [g / self.replicas for g in gradients]
    # Immediate sensitivity: no DP guarantee (module docstring).
    input_gradients = outer.gradient(norm, images)
    flat = tf.reshape(input_gradients, [tf.shape(images)[0], -1])
    sensitivity = tf.reduce_max(tf.norm(flat, axis=1))
    return [g + tf.random.normal(tf.shape(g)) * self.noise_multiplier *
            sensitivity for g in gradients]

  def _fake_gradients(self, fakes, labels, clips):
    """The fake pass's gradient (no noise: no private image enters it).

    With `clip_fake` (private modes), each fake example's gradient is
    clipped like a real one's, so that the clipped real term and the fake
    term keep the same scale; this is for balance, not for privacy.
    """
    d = self.discriminator
    # The replicas' terms are summed: each is its share of the mean over
    # all R * fakes_per_replica fakes.
    total = float(self.fakes_per_replica * self.replicas)
    if self.clip_fake and self.mode in PRIVATE_MODES:
      result = self._clipped_sum(fakes, labels, self._fake_loss_fn, clips)
      return ([g / total for g in result.gradient_sum],
              tf.reduce_mean(result.per_example_losses))
    with tf.GradientTape() as tape:
      fake_loss = tf.reduce_sum(self._fake_loss_fn(
          labels, d(self._d_inputs(fakes, labels), training=True))) / total
    return (tape.gradient(fake_loss, d.trainable_variables,
                          unconnected_gradients="zero"),
            fake_loss * self.replicas)

  def _discriminator_step(self, images, labels):
    d = self.discriminator
    variables = d.trainable_variables
    clips = self._layer_clips()
    gradients = self._real_gradients(images, labels, clips)
    fake_labels = self._random_labels(self.fakes_per_replica)
    fakes = tf.stop_gradient(self._generate(fake_labels, training=True))
    fake_gradients, fake_loss = self._fake_gradients(fakes, fake_labels, clips)
    gradients = [g + f for g, f in zip(gradients, fake_gradients)]
    penalty = tf.constant(0.0)
    if self.loss == "wgan_gp":
      with tf.GradientTape() as tape:
        penalty = losses.gradient_penalty(
            lambda x: d(self._d_inputs(x, fake_labels), training=True),
            self._mean_sample_batch(), fakes)
      weight = self.gp_weight / self.replicas  # The replicas' mean.
      gradients = [g + weight * p for g, p in zip(
          gradients, tape.gradient(penalty, variables,
                                   unconnected_gradients="zero"))]
    self.d_optimizer.apply_gradients(zip(gradients, variables))
    return {"d_fake_loss": fake_loss, "gradient_penalty": penalty}

  def _generator_step(self):
    labels = self._random_labels(self.fakes_per_replica)
    with tf.GradientTape() as tape:
      fakes = self._generate(labels, training=True)
      outputs = self.discriminator(self._d_inputs(fakes, labels),
                                   training=True)
      loss = tf.reduce_mean(losses.generator(self.loss, self.conditioning,
                                             labels, outputs))
      # Summed over the replicas by the optimizer: the mean over all fakes.
      share = loss / self.replicas
    variables = self.generator.trainable_variables
    self.g_optimizer.apply_gradients(
        zip(tape.gradient(share, variables), variables))
    return {"g_loss": loss}

  def _distributed_discriminator_step(self, images, labels):
    return self._replica_means(self.strategy.run(
        self._discriminator_step, args=(images, labels)))

  def _distributed_generator_step(self):
    return self._replica_means(self.strategy.run(self._generator_step))

  def _replica_means(self, metrics):
    return {name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value,
                                       axis=None)
            for name, value in metrics.items()}
