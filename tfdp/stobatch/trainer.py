"""StoBatch's trainer: one synchronous data-parallel step over replicas.

One step (`StoBatchTrainer.step`), with N replicas (a
`tf.distribute.MirroredStrategy`, see `tfdp.stobatch.replicas`) and the
training set shuffled once into fixed disjoint batches of m examples
(`FixedBatches`):

1. 2N distinct fixed batches are drawn (seeded by the step number, so a
   resumed run draws the same ones): replica r gets benign batch B_r and a
   disjoint batch A_r for adversarial examples.
2. On each replica, with the model's *fixed* DP noise (the functional
   mechanism's draws, identical on every replica):

   * ``L_ae = mean_i R(x_i)``, the DP auto-encoder's Taylor reconstruction
     loss (`DPAutoencoderConv.reconstruction_loss`) on B_r;
   * A_r is split among the attacks (example j of the batch goes to attack
     ``j mod len(attacks)``: I-FGSM, MIM, PGD from cleverhans), crafted
     against the model with its DP input noise, with one attack size
     ``kappa ~ U(0, max_attack_size)`` per step (the same on every replica),
     in pixel units of inputs in [clip_min, clip_max];
   * ``L_out = (L~_benign + alpha L~_adv) / (1 + alpha)`` with L~ the noisy
     Taylor loss of the output layer (`NoisyTaylorLoss`), computed as one
     loss with example weights ``1 / ((1 + alpha) m)`` (benign) and
     ``alpha / ((1 + alpha) m)`` (adversarial): its noise and its curvature
     floor act once, on the combined coefficients.

3. Gradients: W1 and its bias get ``d L_ae`` only, every other variable
   ``d L_out`` only (the output loss does not train the first layer, whose
   privacy comes from the auto-encoder's functional mechanism alone). Each
   replica's gradients are divided by N and summed across replicas by the
   optimizer: the update uses the mean over replicas (synchronous data
   parallelism), which equals the gradient of one replica holding all N
   batches (tests/stobatch/test_trainer.py checks it).

Privacy: ``epsilon = epsilon_ae + epsilon_out`` (pure DP) whatever the number
of steps, under `tfdp.stobatch.budget.ASSUMPTIONS`, stated by
`StoBatchBudget.summary()` (which `StoBatchTrainer.privacy_statement`
returns for the caller to print or log). Training data holding several
copies of an example (augmentation multiplicity > 1) is refused.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp import checkpointing
from tfdp.privacy import mechanisms
from tfdp.stobatch import losses as sb_losses
from tfdp.stobatch import models as sb_models

ATTACKS = ("ifgsm", "mim", "pgd")
INPUT_NOISE = ("none", "gaussian", "laplace")


def input_noise(x: tf.Tensor, kind: str, scale: float) -> tf.Tensor:
  """`x` plus fresh noise of `kind` ("none", "gaussian", "laplace")."""
  if kind == "none":
    return x
  if kind == "gaussian":
    return x + mechanisms.gaussian_noise(tf.shape(x), l2_sensitivity=scale,
                                         noise_multiplier=1.0, dtype=x.dtype)
  return x + mechanisms.laplace_noise(tf.shape(x), l1_sensitivity=scale,
                                      epsilon=1.0, dtype=x.dtype)


class FixedBatches:
  """The training set shuffled once into fixed disjoint batches of size m.

  ``permutation`` is drawn once from `seed`; batch b is the examples
  ``permutation[b m : (b + 1) m]`` (the last ``n mod m`` are never used).
  `draw(step, count)` picks `count` distinct batches for a step with a
  generator seeded by ``(seed, step)``.

  Args:
    x: Training inputs [n, ...].
    y: Integer labels [n].
    batch_size: m, >= 1, with at least 2 batches (n >= 2 m).
    seed: Seed of the permutation and of the per-step choices.
    augmentation_multiplicity: Copies of each example in the training set;
      anything but 1 is refused (each copy would spend the budget again).

  Raises:
    ValueError: on bad sizes or augmentation_multiplicity != 1.
  """

  def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int,
               seed: int = 0, augmentation_multiplicity: int = 1):
    if augmentation_multiplicity != 1:
      raise ValueError(
          f"augmentation_multiplicity must be 1, got "
          f"{augmentation_multiplicity!r}: StoBatch's epsilon assumes each "
          "example is in exactly one fixed batch; augmentation that adds "
          "copies of an example would spend the budget once per copy")
    self.x = np.asarray(x, np.float32)
    self.y = np.asarray(y, np.int64)
    if self.x.shape[:1] != self.y.shape:
      raise ValueError(f"x and y must have the same length, got "
                       f"{self.x.shape} and {self.y.shape}")
    self.batch_size = _validation.check_positive_int("batch_size",
                                                     batch_size)
    self.seed = _validation.check_non_negative_int("seed", seed)
    self.num_batches = len(self.x) // self.batch_size
    if self.num_batches < 2:
      raise ValueError(
          f"batch_size must leave at least 2 fixed batches, got "
          f"{batch_size} for {len(self.x)} examples")
    self.permutation = np.random.default_rng(self.seed).permutation(
        len(self.x))

  def batch(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Fixed batch `index`: (x, y)."""
    ids = self.permutation[index * self.batch_size:
                           (index + 1) * self.batch_size]
    return self.x[ids], self.y[ids]

  def draw(self, step: int, count: int) -> List[int]:
    """`count` distinct batch indices for `step` (deterministic)."""
    if count > self.num_batches:
      raise ValueError(
          f"a step needs {count} distinct fixed batches (2 per replica) but "
          f"there are only {self.num_batches} of size {self.batch_size}; "
          "lower batch_size or the number of replicas")
    rng = np.random.default_rng([self.seed, step])
    return [int(i) for i in rng.choice(self.num_batches, count,
                                       replace=False)]

  def step_data(self, step: int, replicas: int) -> Tuple[np.ndarray, ...]:
    """(x, y, x_adv, y_adv, b, b_adv) for the N replicas, concatenated.

    b and b_adv give each example's fixed-batch index (which noise draw it
    gets).
    """
    ids = self.draw(step, 2 * replicas)
    benign = [self.batch(i) for i in ids[:replicas]]
    adv = [self.batch(i) for i in ids[replicas:]]
    index = lambda chosen: np.repeat(np.asarray(chosen, np.int32),
                                     self.batch_size)
    return (np.concatenate([b[0] for b in benign]),
            np.concatenate([b[1] for b in benign]),
            np.concatenate([a[0] for a in adv]),
            np.concatenate([a[1] for a in adv]),
            index(ids[:replicas]), index(ids[replicas:]))


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Settings of `StoBatchTrainer`.

  Attributes:
    learning_rate: Adam's learning rate.
    alpha: Weight of the adversarial loss, >= 0 (1.5 in StoBatch).
    attacks: Subset of ("ifgsm", "mim", "pgd") the adversarial batch is split
      among; empty trains without adversarial examples.
    max_attack_size: Upper end of the per-step uniform attack size (L-inf,
      pixel units of [clip_min, clip_max]): 1.0 MNIST, 0.5 CIFAR-10.
    attack_steps: Iterations of each attack.
    clip_min: Lowest valid input.
    clip_max: Highest valid input.
    seed: Seeds the per-step attack sizes.
    noise_seed: Seeds the output loss's Laplace draws, tests only (None: OS
      entropy; a known seed voids the guarantee).
    min_curvature: The output loss's curvature floor c >= 0
      (`NoisyTaylorLoss`).
    input_noise: Fresh noise added to every classifier input in training
      (benign and adversarial; not to the reconstruction objective): "none",
      "gaussian" (N(0, s^2)) or "laplace" (Lap(s)), s = `input_noise_scale`.
      Per-example preprocessing: it keeps each example's term its own, and
      trains the model for the noise it is certified with (randomized
      smoothing or PixelDP at inference).
    input_noise_scale: s > 0 when `input_noise` is not "none".
  """
  learning_rate: float = 1e-3
  alpha: float = 1.5
  attacks: Tuple[str, ...] = ATTACKS
  max_attack_size: float = 1.0
  attack_steps: int = 10
  clip_min: float = -1.0
  clip_max: float = 1.0
  seed: int = 0
  noise_seed: Optional[int] = None
  min_curvature: float = 0.1
  input_noise: str = "none"
  input_noise_scale: float = 0.0

  def __post_init__(self):
    _validation.check_positive("learning_rate", self.learning_rate)
    _validation.check_non_negative("alpha", self.alpha)
    for attack in self.attacks:
      _validation.check_choice("attacks", attack, ATTACKS)
    if len(set(self.attacks)) != len(self.attacks):
      raise ValueError(f"attacks must not repeat, got {self.attacks!r}")
    _validation.check_positive("max_attack_size", self.max_attack_size)
    _validation.check_positive_int("attack_steps", self.attack_steps)
    if not self.clip_min < self.clip_max:
      raise ValueError(f"clip_min must be < clip_max, got {self.clip_min} "
                       f"and {self.clip_max}")
    _validation.check_non_negative_int("seed", self.seed)
    _validation.check_non_negative("min_curvature", self.min_curvature)
    _validation.check_choice("input_noise", self.input_noise, INPUT_NOISE)
    if self.input_noise != "none":
      _validation.check_positive("input_noise_scale", self.input_noise_scale)


def craft(name: str, model_fn, x, labels, size, steps: int, clip_min,
          clip_max, norm: str = "inf"):
  """One cleverhans attack ("fgsm", "ifgsm", "mim", "pgd") of size `size`.

  `size` may be a tensor. cleverhans compares ``eps_iter <= eps`` in
  Python, which a size traced as a tensor cannot pass; so the attack runs in
  rescaled coordinates ``u = x / size`` with ``eps = 1`` and the valid range
  ``[clip_min / size, clip_max / size]``, against ``u -> model(size u)``.
  For FGSM, I-FGSM, PGD and MIM, in L-inf or L2, this is the same attack:
  their steps use sign(gradient) or gradient / ||gradient||_2 (MIM after a
  per-example positive rescaling), which the positive factor ``size`` in
  ``d/du = size d/dx`` does not change, and the ball, the step
  ``min(1, 2.5 / steps)`` and the random start scale by ``size``.

  Args:
    name: The attack.
    model_fn: Maps inputs to logits.
    x: Inputs within [clip_min, clip_max].
    labels: Integer labels (untargeted attack on them).
    size: Attack size (> 0; tiny values are floored at 1e-6).
    steps: Iterations (ignored by FGSM).
    clip_min: Lowest valid input.
    clip_max: Highest valid input.
    norm: "inf" or "2".

  Returns:
    The adversarial inputs.
  """
  # pylint: disable=g-import-not-at-top
  from cleverhans.tf2.attacks import fast_gradient_method as fgm
  from cleverhans.tf2.attacks import momentum_iterative_method as mim
  from cleverhans.tf2.attacks import projected_gradient_descent as pgd
  # pylint: enable=g-import-not-at-top
  order = np.inf if norm == "inf" else 2
  size = tf.maximum(tf.cast(size, x.dtype), 1e-6)
  step_size = min(1.0, 2.5 / steps)
  u = x / size
  lo, hi = clip_min / size, clip_max / size

  def scaled_fn(v):
    return model_fn(v * size)

  if name == "fgsm":
    adv = fgm.fast_gradient_method(
        scaled_fn, u, eps=1.0, norm=order, loss_fn=_cross_entropy,
        clip_min=lo, clip_max=hi, y=labels, sanity_checks=False)
  elif name == "mim":
    adv = mim.momentum_iterative_method(
        scaled_fn, u, eps=1.0, eps_iter=step_size, nb_iter=steps,
        norm=order, clip_min=lo, clip_max=hi, y=labels, sanity_checks=False)
  else:
    # I-FGSM is PGD without the random start (Kurakin et al.).
    adv = pgd.projected_gradient_descent(
        scaled_fn, u, eps=1.0, eps_iter=step_size, nb_iter=steps,
        norm=order, loss_fn=_cross_entropy, clip_min=lo, clip_max=hi,
        y=labels, rand_init=(name == "pgd"), sanity_checks=False)
  return tf.clip_by_value(adv * size, clip_min, clip_max)


def _cross_entropy(labels, logits):
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                        logits=logits)


def adversarial_batch(model: tf.keras.Model, x: tf.Tensor, labels: tf.Tensor,
                      size: tf.Tensor, attacks: Sequence[str], steps: int,
                      clip_min: float, clip_max: float,
                      draws: Optional[tf.Tensor] = None
                      ) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
  """Splits a batch among `attacks` (example j -> attack j mod A) and crafts.

  The model runs with ``training=True``: its fixed DP noise, each example
  with the draw of its fixed batch (`draws`; the model the issue calls "with
  the DP input noise"). The split by residue keeps each example's attack the
  same whether the batch is one replica's or the concatenation of N
  replicas' (when m is a multiple of A).

  Returns:
    (x_adv, labels_adv, draws_adv), gradient stopped, in the order of the
    attacks (draws_adv None without `draws`).
  """
  xs, ys, ds = [], [], []
  for a, name in enumerate(attacks):
    part = slice(a, None, len(attacks))
    da = None if draws is None else draws[part]

    def model_fn(z, da=da):
      return model(z, training=True, draw=da)

    xs.append(craft(name, model_fn, x[part], labels[part], size, steps,
                    clip_min, clip_max))
    ys.append(labels[part])
    ds.append(da)
  return (tf.stop_gradient(tf.concat(xs, 0)), tf.concat(ys, 0),
          None if draws is None else tf.concat(ds, 0))


def _uniform_weights(rows: tf.Tensor, total: float) -> tf.Tensor:
  """`total` spread evenly over the rows of `rows`."""
  count = tf.cast(tf.shape(rows)[0], rows.dtype)
  return tf.fill(tf.shape(rows)[:1], tf.cast(total, rows.dtype) / count)


def _taylor_metrics(prefix: str, logits: tf.Tensor, labels: tf.Tensor,
                    num_classes: int) -> Dict[str, tf.Tensor]:
  """The batch's noise-free Taylor loss and accuracy (for logging)."""
  return {
      f"{prefix}_loss": tf.reduce_mean(sb_losses.taylor_cross_entropy(
          tf.one_hot(labels, num_classes), logits)),
      f"{prefix}_accuracy": tf.reduce_mean(tf.cast(
          tf.equal(tf.argmax(logits, -1), labels), tf.float32)),
  }


class StoBatchTrainer:
  """Trains a `StoBatchNet` with StoBatch's losses under a strategy.

  Build the model inside ``strategy.scope()``; the trainer creates its
  optimizer and the output loss's fixed noise there too.

  Args:
    model: A built `StoBatchNet` (its `budget` gives the noise scales).
    strategy: The `tf.distribute.Strategy` (see `replicas.replica_strategy`).
    config: `TrainerConfig`.
  """

  def __init__(self, model: sb_models.StoBatchNet,
               strategy: tf.distribute.Strategy,
               config: TrainerConfig = TrainerConfig()):
    if model.budget is None:
      raise ValueError("model must carry its StoBatchBudget (build it with "
                       "build_stobatch_model)")
    self.model = model
    self.strategy = strategy
    self.config = config
    self.budget = model.budget
    self.replicas = strategy.num_replicas_in_sync
    with strategy.scope():
      self.taylor_loss = sb_losses.NoisyTaylorLoss(
          hidden_width=model.hidden_width, num_classes=model.num_classes,
          batch_size=self.budget.batch_size,
          epsilon_out=self.budget.epsilon_out,
          num_draws=model.autoencoder.num_draws,
          min_curvature=config.min_curvature, seed=sb_models.secret_seed(config.noise_seed), name="taylor_loss")
      self.optimizer = tf.keras.optimizers.Adam(config.learning_rate)
      self.optimizer.build(model.trainable_variables)
    self._variables = (list(model.autoencoder_variables)
                       + list(model.upper_variables))
    self._train_fn = tf.function(self._distributed_train)
    self._grad_fn = tf.function(self._distributed_gradients)

  # -- privacy -------------------------------------------------------------

  @property
  def epsilon(self) -> float:
    """epsilon_ae + epsilon_out (pure DP), independent of the steps."""
    return self.budget.epsilon

  def privacy_statement(self) -> str:
    """The budget and its assumptions (`StoBatchBudget.summary`)."""
    return self.budget.summary()

  # -- one step ------------------------------------------------------------

  def _losses(self, x, y, xa, ya, draw, draw_a, size):
    model, config = self.model, self.config
    k = model.num_classes
    adversarial = bool(config.attacks) and config.alpha > 0
    if adversarial:
      # Crafted outside the tape: the examples are inputs (gradient stopped).
      x_adv, y_adv, draw_adv = adversarial_batch(
          model, xa, ya, size, config.attacks, config.attack_steps,
          config.clip_min, config.clip_max, draws=draw_a)
    with tf.GradientTape(persistent=True) as tape:
      rec = tf.reduce_mean(model.autoencoder.reconstruction_loss(
          x, training=True, draw=draw))
      noised = lambda z: input_noise(z, config.input_noise,
                                     config.input_noise_scale)
      hb = model.hidden(noised(x), training=True, draw=draw)
      kernel, bias = model.head.kernel, model.head.bias
      metrics = {"reconstruction_loss": rec}
      metrics.update(_taylor_metrics("benign", model.head(hb), y, k))
      if adversarial:
        ha = model.hidden(noised(x_adv), training=True, draw=draw_adv)
        metrics.update(_taylor_metrics("adversarial", model.head(ha), y_adv,
                                       k))
        # (L_benign + alpha L_adv) / (1 + alpha) as one weighted loss, so
        # the noise and the curvature floor act once on the combined
        # coefficients (tfdp.stobatch.losses).
        hidden = tf.concat([hb, ha], 0)
        labels = tf.concat([y, y_adv], 0)
        draws = tf.concat([draw, draw_adv], 0)
        weights = tf.concat([
            _uniform_weights(hb, 1.0 / (1.0 + config.alpha)),
            _uniform_weights(ha, config.alpha / (1.0 + config.alpha))], 0)
      else:
        hidden, labels, weights = hb, y, _uniform_weights(hb, 1.0)
        draws = draw
      out = self.taylor_loss(tf.one_hot(labels, k), hidden, kernel, bias,
                             example_weights=weights, draws=draws)
      metrics["output_loss"] = out
    ae_vars, up_vars = model.autoencoder_variables, model.upper_variables
    grads = (tape.gradient(rec, ae_vars) + tape.gradient(out, up_vars))
    del tape
    scale = 1.0 / self.replicas
    grads = [g * scale for g in grads]
    return grads, metrics

  def _replica_train(self, x, y, xa, ya, draw, draw_a, size):
    grads, metrics = self._losses(x, y, xa, ya, draw, draw_a, size)
    self.optimizer.apply_gradients(zip(grads, self._variables))
    return metrics

  def _distributed_train(self, inputs, size):
    metrics = self.strategy.run(self._replica_train, args=inputs + (size,))
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v,
                                    axis=None)
            for k, v in metrics.items()}

  def _replica_gradients(self, x, y, xa, ya, draw, draw_a, size):
    grads, _ = self._losses(x, y, xa, ya, draw, draw_a, size)
    return tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, grads)

  def _distributed_gradients(self, inputs, size):
    grads = self.strategy.run(self._replica_gradients,
                              args=inputs + (size,))
    return [self.strategy.experimental_local_results(g)[0] for g in grads]

  def _distribute(self, arrays):
    n = self.replicas
    for a in arrays:
      if len(a) % n:
        raise ValueError(f"the global batch ({len(a)}) must split evenly "
                         f"over {n} replicas")
    chunks = [np.split(np.asarray(a), n) for a in arrays]
    return tuple(
        self.strategy.experimental_distribute_values_from_function(
            lambda ctx, c=c: tf.constant(c[ctx.replica_id_in_sync_group]))
        for c in chunks)

  def attack_size(self, step: int) -> float:
    """The step's attack size, U(0, max_attack_size) seeded by the step."""
    rng = np.random.default_rng([self.config.seed, step, 1])
    return float(rng.uniform(0.0, self.config.max_attack_size))

  def step(self, x, y, x_adv, y_adv, draw, draw_adv,
           size: float) -> Dict[str, float]:
    """One training step on global batches (split evenly over the replicas).

    Args:
      x, y: The benign global batch [N m, ...] and its integer labels.
      x_adv, y_adv: The (disjoint) global batch to craft adversarial examples
        from.
      draw, draw_adv: Each example's fixed-batch index (its noise draw), [N m]
        (`FixedBatches.step_data`).
      size: The attack size of this step.

    Returns:
      The replica-averaged metrics.
    """
    inputs = self._distribute((x, y, x_adv, y_adv, draw, draw_adv))
    metrics = self._train_fn(inputs, tf.constant(size, tf.float32))
    return {k: float(v) for k, v in metrics.items()}

  def gradients(self, x, y, x_adv, y_adv, draw, draw_adv,
                size: float) -> List[np.ndarray]:
    """The averaged update direction of `step` without applying it.

    Ordered as ``model.autoencoder_variables + model.upper_variables``.
    """
    inputs = self._distribute((x, y, x_adv, y_adv, draw, draw_adv))
    grads = self._grad_fn(inputs, tf.constant(size, tf.float32))
    return [g.numpy() for g in grads]

  # -- the loop ------------------------------------------------------------

  def checkpoint(self) -> tf.train.Checkpoint:
    """Model (with its fixed noise), output-loss noise, optimizer, step."""
    return tf.train.Checkpoint(model=self.model,
                               taylor_loss=self.taylor_loss,
                               optimizer=self.optimizer)

  def fit(self, batches: FixedBatches, steps: int, *,
          checkpoint_dir: Optional[str] = None, checkpoint_every: int = 100,
          log_dir: Optional[str] = None, log_every: int = 10
          ) -> List[Dict[str, float]]:
    """Trains until `steps` steps in total (resuming from `checkpoint_dir`).

    Args:
      batches: The `FixedBatches` (m must equal the budget's batch size).
      steps: Total steps (a resumed run continues up to it), >= 0.
      checkpoint_dir: Where to save every `checkpoint_every` steps and when
        the loop ends or is interrupted; the latest checkpoint there is
        restored first (model, fixed noise, optimizer, step). Under several
        workers the chief writes it and every worker restores from it
        (`tfdp.checkpointing.TrainingCheckpoints`).
      checkpoint_every: >= 1.
      log_dir: TensorBoard directory for the metrics and epsilon, or None.
      log_every: Log (and record in the returned history) every this many
        steps, >= 1.

    Returns:
      The logged metrics, one dict per logged step (with "step").
    """
    steps = _validation.check_non_negative_int("steps", steps)
    checkpoint_every = _validation.check_positive_int("checkpoint_every",
                                                      checkpoint_every)
    log_every = _validation.check_positive_int("log_every", log_every)
    if batches.batch_size != self.budget.batch_size:
      raise ValueError(
          f"batches.batch_size ({batches.batch_size}) must equal the "
          f"budget's m ({self.budget.batch_size})")
    if batches.num_batches != self.model.autoencoder.num_draws:
      raise ValueError(
          f"the model holds {self.model.autoencoder.num_draws} noise draws, "
          f"one per fixed batch, but there are {batches.num_batches} fixed "
          "batches: build the model with num_batches=batches.num_batches")
    checkpoints = None
    if checkpoint_dir:
      checkpoints = checkpointing.TrainingCheckpoints(
          self.checkpoint(), checkpoint_dir, self.strategy)
      checkpoints.restore_latest()
    writer = tf.summary.create_file_writer(log_dir) if log_dir else None
    history = []
    step = int(self.optimizer.iterations.numpy())
    try:
      while step < steps:
        data = batches.step_data(step, self.replicas)
        metrics = self.step(*data, self.attack_size(step))
        step += 1
        if step % log_every == 0 or step == steps:
          metrics["attack_size"] = self.attack_size(step - 1)
          history.append(dict(metrics, step=step))
          if writer is not None:
            with writer.as_default(step=step):
              for name, value in metrics.items():
                tf.summary.scalar(f"train/{name}", value)
              tf.summary.scalar("privacy/epsilon", self.epsilon)
        if checkpoints is not None and step % checkpoint_every == 0:
          checkpoints.save(step)
    finally:
      if (checkpoints is not None and step > 0
          and checkpoints.saved_step != step):
        checkpoints.save(step)
      if writer is not None:
        writer.flush()
    return history


def restore_latest(trainer: StoBatchTrainer, checkpoint_dir: str) -> int:
  """Restores the latest checkpoint of `checkpoint_dir`; returns its step.

  Raises:
    FileNotFoundError: if there is none.
  """
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest is None:
    raise FileNotFoundError(f"no checkpoint in {checkpoint_dir}")
  trainer.checkpoint().restore(latest).expect_partial()
  return int(trainer.optimizer.iterations.numpy())


__all__ = ["ATTACKS", "FixedBatches", "StoBatchTrainer", "TrainerConfig",
           "adversarial_batch", "craft", "restore_latest"]
