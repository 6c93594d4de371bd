"""Public-gradient extenders of DP-SGD: DOPE-SGD and Mirror-GD.

Each training step draws a batch of public (or synthetic) examples, takes
the ordinary mean gradient p of the loss on it (unclipped, no noise), and
uses it to steer the noisy private gradient. With B the expected batch size,
C the clip norm and N ~ N(0, sigma^2 C^2 I) the step's noise:

  DOPE-SGD (`DOPE`): clip each private gradient around p and add p back,

      update = (sum_i clip_C(g_i - p) + N) / B + p;

    the part of g_i the public data already predicts is not clipped away,
    and the noise only has to hide the difference.

  Mirror-GD (`Mirror`, the first-order form of public-data-assisted mirror
  descent, Amid et al. 2022): a convex combination,

      update = beta (sum_i clip_C(g_i) + N) / B + (1 - beta) p.

Why the DP guarantee is DP-SGD's: p depends on the public batch and the
current weights only. The weights are a post-processing of the earlier
noisy releases, and the public examples are not in the private set, so for
neighbouring private sets p is the same function of the past releases.
Given them, changing one private example moves sum_i clip_C(g_i - p) by at
most C (each term has norm <= C), exactly as with p = 0, so each step is the
same Gaussian mechanism and the accounting (`tfdp.privacy`) is unchanged.
The public set must not overlap the private one: an example in both is
protected only by the private side's noise, which p does not hide.
"""

from typing import Any, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfdp import _validation


class PublicGradient:
  """The public batch and gradient shared by the extenders.

  Args:
    x: public inputs, an array (all of them stay in memory).
    y: their labels, one per input.
    batch_size: public examples per step (64 in the ported system; at most
      the public set's size).
    seed: seed of the public batches' draws (not of the DP noise).

  Raises:
    ValueError: naming the argument, for empty or mismatched data or a bad
      batch size.
  """

  #: Whether the private gradients are clipped around p (DOPE-SGD).
  centers_clipping = False

  def __init__(self, x: Any, y: Any, batch_size: int = 64,
               seed: Optional[int] = None):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0:
      raise ValueError("x (the public inputs) must hold at least one "
                       f"example, got shape {x.shape}")
    if y.ndim == 0 or len(y) != len(x):
      raise ValueError(f"y must hold one label per public input: {len(x)} "
                       f"inputs, labels of shape {y.shape}")
    self.batch_size = _validation.check_positive_int("batch_size", batch_size)
    if self.batch_size > len(x):
      raise ValueError(f"batch_size must be at most the {len(x)} public "
                       f"examples, got {batch_size}")
    self.size, self.seed = len(x), seed
    self._x = tf.constant(x.astype(np.float32) if x.dtype == np.float64
                          else x)
    self._y = tf.constant(y)

  def batch(self):
    """A uniformly random public batch of `batch_size` distinct examples."""
    indices = tf.random.shuffle(tf.range(self.size), seed=self.seed)
    indices = indices[:self.batch_size]
    return tf.gather(self._x, indices), tf.gather(self._y, indices)

  def gradient(self, model: tf.keras.Model, loss_fn) -> List[tf.Tensor]:
    """p: the mean gradient of the loss over a fresh public batch.

    Args:
      model: the model being trained (called in training mode).
      loss_fn: (y_true, y_pred) -> per-example losses.
    """
    x, y = self.batch()
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
    return tape.gradient(loss, model.trainable_variables,
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  def combine(self, noisy_private: Sequence[tf.Tensor],
              public: Sequence[tf.Tensor]) -> List[tf.Tensor]:
    """The update from the noisy private average and p."""
    raise NotImplementedError


class DOPE(PublicGradient):
  """DOPE-SGD: clip private gradients around the public one, add it back.

  For `tfdp.make_private(model, public_gradient=DOPE(x_pub, y_pub))`; see
  the module docstring for the update and why it is as private as DP-SGD.

  Example:
    >>> public = DOPE(np.zeros((100, 4), np.float32), np.zeros(100),
    ...               batch_size=32)
    >>> public.batch()[0].shape
    TensorShape([32, 4])
  """

  centers_clipping = True

  def combine(self, noisy_private, public):
    return [n + tf.cast(p, n.dtype) for n, p in zip(noisy_private, public)]


class Mirror(PublicGradient):
  """Mirror-GD: beta x noisy private average + (1 - beta) x public gradient.

  Args:
    x: public inputs.
    y: their labels.
    private_weight: beta in (0, 1]; 1 is plain DP-SGD.
    batch_size: public examples per step.
    seed: seed of the public batches' draws.

  Example:
    >>> public = Mirror(np.zeros((100, 4), np.float32), np.zeros(100),
    ...                 private_weight=0.7)
    >>> public.private_weight
    0.7
  """

  def __init__(self, x: Any, y: Any, private_weight: float = 0.5,
               batch_size: int = 64, seed: Optional[int] = None):
    super().__init__(x, y, batch_size=batch_size, seed=seed)
    self.private_weight = _validation.check_probability("private_weight",
                                                        private_weight)

  def combine(self, noisy_private, public):
    beta = self.private_weight
    return [beta * n + (1.0 - beta) * tf.cast(p, n.dtype)
            for n, p in zip(noisy_private, public)]
