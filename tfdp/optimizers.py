"""DP Keras optimizers for `model.fit`.

A DP optimizer replaces the batch gradient with the Gaussian mechanism applied
to the clipped sum of per-example gradients (DP-SGD, Abadi et al. 2016):

    g~ = (sum_i min(1, C/||g_i||) g_i + N(0, (sigma C)^2 I)) / B,

where C is `l2_norm_clip`, sigma `noise_multiplier` and B
`expected_batch_size` (a constant, so that the normalisation reveals nothing
about the sampled batch's size under Poisson sampling). The clipped sum has L2
sensitivity C, so the noise standard deviation on it is sigma * C. The wrapped
optimizer (SGD, Adam, ...) then applies g~ as it would any gradient: what it
does with g~ is post-processing.

Any `tf.keras.optimizers.Optimizer` subclass becomes private with
`dp_optimizer_class`; `DPSGD`, `DPAdam`, `DPRMSprop` and `DPAdagrad` are ready
made. In a model wrapped by `tfdp.make_private`, the model's train step
computes the clipped sum with the fast engine and calls `noisy_average`.
Compiled into a plain Keras model, the optimizer instead computes exact
per-example gradients from the loss vector Keras hands it (slow; it warns
once), so the loss must not reduce over the batch (`reduction=NONE`).

Example:
  >>> model = tf.keras.Sequential([tf.keras.layers.Dense(2)])
  >>> model.compile(
  ...     optimizer=DPSGD(learning_rate=0.1, l2_norm_clip=1.0,
  ...                     noise_multiplier=1.1, expected_batch_size=8),
  ...     loss=tf.keras.losses.MeanSquaredError(reduction="none"))
  >>> history = model.fit(tf.ones([16, 3]), tf.zeros([16, 2]), batch_size=8,
  ...                     verbose=0)
"""

import secrets
from typing import Dict, List, Sequence, Type

from absl import logging
import tensorflow as tf

from tfdp import _validation
from tfdp import clipping
from tfdp.privacy import mechanisms

_DP_ARGUMENTS = ("l2_norm_clip", "noise_multiplier", "expected_batch_size")


def _first_replica_indicator() -> tf.Tensor:
  """1.0 on the first replica in sync, 0.0 on the others.

  Gradients are summed over replicas after `compute_gradients`, so noise drawn
  on the first replica only is added exactly once per step. (Drawing
  sigma C / sqrt(R) on every replica would need independent seeds per
  replica, which seeded stateful ops do not guarantee.)
  """
  context = tf.distribute.get_replica_context()
  if context is None:
    return tf.constant(1.0)
  return tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float32)


class DPOptimizerMixin:
  """The DP part shared by every DP optimizer class; see the module doc."""

  def _init_dp(self, l2_norm_clip: float, noise_multiplier: float,
               expected_batch_size: int) -> None:
    self.l2_norm_clip = _validation.check_positive("l2_norm_clip",
                                                   l2_norm_clip)
    self.noise_multiplier = _validation.check_non_negative(
        "noise_multiplier", noise_multiplier)
    self.expected_batch_size = _validation.check_positive_int(
        "expected_batch_size", expected_batch_size)
    self._warned_exact_path = False

  def _create_lineage_variable(self) -> None:
    # Lifted out of any tf.function, as Keras does for `iterations`.
    with tf.init_scope():
      self._dp_lineage = tf.Variable(
          secrets.randbits(62) + 1, dtype=tf.int64, trainable=False,
          name="dp_lineage")

  @property
  def dp_lineage(self) -> tf.Variable:
    """A random token that identifies this optimizer's run of DP steps.

    `iterations` counts the DP steps (one `apply_gradients` per noisy
    release). The token is drawn when the optimizer is made and is saved and
    restored with it (it is an attribute, so `tf.train.Checkpoint`,
    `BackupAndRestore` and `model.save` keep it), so a
    `tfdp.privacy.PrivacyAccountant` can tell a restored optimizer, whose
    iterations it has partly counted, from another one, whose iterations are
    all new to it.
    """
    return self._dp_lineage

  def noisy_average(self, clipped_sum: Sequence[tf.Tensor]) -> List[tf.Tensor]:
    """Adds N(0, (sigma C)^2) to each clipped sum and divides by B.

    Called once per replica; the noise is drawn on the first replica only, so
    after the cross-replica sum the total noise has standard deviation
    sigma * C whatever the number of replicas.
    """
    noise_on = _first_replica_indicator()
    averaged = []
    for gradient in clipped_sum:
      # Drawn once the sum exists: nothing else orders the draw, and noise
      # drawn at the start of the step is held through the whole clipping
      # pass, a model's gradients of memory (measured on ResNet-18).
      with tf.control_dependencies([gradient]):
        noise = mechanisms.gaussian_noise(
            tf.shape(gradient), l2_sensitivity=self.l2_norm_clip,
            noise_multiplier=self.noise_multiplier, dtype=gradient.dtype)
      noisy = gradient + tf.cast(noise_on, gradient.dtype) * noise
      averaged.append(noisy / tf.cast(self.expected_batch_size,
                                      gradient.dtype))
    return averaged

  def compute_gradients(self, loss, var_list, tape=None):
    """Private gradients of a per-example loss vector recorded on `tape`.

    This is what Keras' default `train_step` calls through `minimize`. The
    per-example gradients are the rows of the exact Jacobian of the loss
    vector (`tfdp.clipping.clipped_sum_from_tape`).
    """
    if tape is None or callable(loss):
      raise ValueError(
          "A DP optimizer needs the tape that recorded a vector of "
          "per-example losses: call minimize(loss_vector, var_list, tape=...) "
          f"(got loss={loss!r}, tape={tape!r}).")
    if callable(var_list):
      var_list = var_list()
    if not self._warned_exact_path:
      self._warned_exact_path = True
      logging.warning(
          "tfdp: %s is computing per-example gradients with the exact "
          "Jacobian path (slow, memory ~ batch x parameters). Wrap the model "
          "with tfdp.make_private(model) before compile for the fast "
          "per-example clipping engine.", type(self).__name__)
    result = clipping.clipped_sum_from_tape(tape, loss, var_list,
                                            self.l2_norm_clip)
    clipped_sum = clipping.check_finite_norms(result.norms, self.iterations,
                                              result.gradient_sum)
    return list(zip(self.noisy_average(clipped_sum), var_list))

  def minimize(self, loss, var_list, tape=None):
    """`compute_gradients`, then `apply_gradients` once they are checked.

    The update, step count included, waits for the private gradients (and
    so for `compute_gradients`' check of the per-example norms): a refused
    step changes nothing and is not counted.
    """
    grads_and_vars = self.compute_gradients(loss, var_list, tape)
    with tf.control_dependencies([g for g, _ in grads_and_vars]):
      return self.apply_gradients(grads_and_vars)

  def _dp_config(self) -> Dict[str, float]:
    return {name: getattr(self, name) for name in _DP_ARGUMENTS}


_DP_CLASSES: Dict[type, type] = {}


def dp_optimizer_class(
    optimizer_class: Type[tf.keras.optimizers.Optimizer]) -> type:
  """Returns the DP version of a Keras optimizer class.

  The returned class takes the wrapped class's arguments plus the keyword
  arguments `l2_norm_clip` (C > 0), `noise_multiplier` (sigma >= 0) and
  `expected_batch_size` (B >= 1), all required.

  Args:
    optimizer_class: a subclass of `tf.keras.optimizers.Optimizer` (the
      Keras 2.11+ optimizers; the legacy ones are not supported).

  Returns:
    A registered Keras-serializable class named "DP" + the wrapped name.

  Example:
    >>> DPNadam = dp_optimizer_class(tf.keras.optimizers.Nadam)
    >>> opt = DPNadam(learning_rate=1e-3, l2_norm_clip=1.0,
    ...               noise_multiplier=1.0, expected_batch_size=256)
  """
  if (not isinstance(optimizer_class, type) or
      not issubclass(optimizer_class, tf.keras.optimizers.Optimizer)):
    raise ValueError(
        "optimizer_class must be a subclass of tf.keras.optimizers.Optimizer "
        f"(legacy optimizers are not supported), got {optimizer_class!r}")
  if issubclass(optimizer_class, DPOptimizerMixin):
    return optimizer_class
  if optimizer_class in _DP_CLASSES:
    return _DP_CLASSES[optimizer_class]

  class DPOptimizer(DPOptimizerMixin, optimizer_class):  # pylint: disable=missing-docstring

    def __init__(self, *args, l2_norm_clip: float, noise_multiplier: float,
                 expected_batch_size: int, **kwargs):
      self._init_dp(l2_norm_clip, noise_multiplier, expected_batch_size)
      super().__init__(*args, **kwargs)
      self._create_lineage_variable()

    def get_config(self):
      config = super().get_config()
      config.update(self._dp_config())
      return config

  name = "DP" + optimizer_class.__name__
  DPOptimizer.__name__ = DPOptimizer.__qualname__ = name
  DPOptimizer.__doc__ = (
      f"Differentially private {optimizer_class.__name__}: "
      "see `tfdp.optimizers`.")
  registered = tf.keras.utils.register_keras_serializable(package="tfdp")(
      DPOptimizer)
  _DP_CLASSES[optimizer_class] = registered
  return registered


DPSGD = dp_optimizer_class(tf.keras.optimizers.SGD)
DPAdam = dp_optimizer_class(tf.keras.optimizers.Adam)
DPRMSprop = dp_optimizer_class(tf.keras.optimizers.RMSprop)
DPAdagrad = dp_optimizer_class(tf.keras.optimizers.Adagrad)


def make_dp_optimizer(optimizer: tf.keras.optimizers.Optimizer, *,
                      l2_norm_clip: float, noise_multiplier: float,
                      expected_batch_size: int):
  """Returns a DP copy of a configured Keras optimizer instance.

  Example:
    >>> opt = make_dp_optimizer(tf.keras.optimizers.Adam(1e-3),
    ...                         l2_norm_clip=1.0, noise_multiplier=1.0,
    ...                         expected_batch_size=128)
  """
  if not isinstance(optimizer, tf.keras.optimizers.Optimizer):
    raise ValueError(
        "optimizer must be a tf.keras.optimizers.Optimizer instance (legacy "
        f"optimizers are not supported), got {optimizer!r}")
  config = optimizer.get_config()
  for name in _DP_ARGUMENTS:
    config.pop(name, None)
  return dp_optimizer_class(type(optimizer)).from_config(
      dict(config, l2_norm_clip=l2_norm_clip,
           noise_multiplier=noise_multiplier,
           expected_batch_size=expected_batch_size))


def is_dp_optimizer(optimizer) -> bool:
  """True if `optimizer` adds calibrated noise to clipped gradients."""
  return isinstance(optimizer, DPOptimizerMixin)
