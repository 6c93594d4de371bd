"""StoBatch's output-layer loss: the second-order Taylor cross-entropy, made DP.

Per logit ``z`` and label ``y`` in {0, 1}, the sigmoid cross-entropy is
``softplus(z) - z y = max(z, 0) - z y + log(1 + e^-|z|)`` and, around 0,
``log(1 + e^-|z|) = ln 2 - |z|/2 + z^2/8 - z^4/192 + O(z^6)``. StoBatch keeps
the expansion to second order:

    T(z, y) = max(z, 0) - z y + ln 2 - |z|/2 + z^2/8
            = ln 2 + z (1/2 - y) + z^2 / 8        (identically, for all z)

so ``T`` is a polynomial in ``z`` and differs from the exact loss by
``z^4/192 + O(z^6)``.

Functional mechanism (paper, Phan et al. ICML 2020; as in their AdLM): with
the last hidden layer ``h in [-1, 1]^E`` (see `layers.ClipHidden`), the output
weights ``W`` (E x K) and bias ``b`` (K), write ``h' = [h, 1]`` and
``W' = [W; b]`` ((E+1) x K), so ``z_k = h' . W'_k`` and the batch-mean loss is

    L(W') = K ln 2 + sum_{e,k} W'_ek lambda1_ek
                   + 1/8 sum_k W'_k^T lambda2 W'_k,
    lambda1_ek  = (1/m) sum_i h'_ie (1/2 - y_ik)       (linear in z)
    lambda2_ee' = (1/m) sum_i h'_ie h'_ie'             (quadratic in z)

`NoisyTaylorLoss` adds ``chi1 ~ Lap(b3)^{(E+1) x K}`` to lambda1 and
``chi2 ~ Lap(b3)^{(E+1) x (E+1)}`` to lambda2, ``b3 = Delta3 / (m
epsilon_out)``, ``Delta3 = 2 E``, both drawn once, i.e.

    L~(W') = L(W') + sum_{e,k} W'_ek chi1_ek + 1/8 sum_k W'_k^T chi2 W'_k.

A noisy quadratic form need not be positive: ``lambda2 + chi2`` is
indefinite as soon as the noise outweighs the data (at m = 48 and epsilon_out
= 1 the loss reached -160 in six steps), and then ``L~`` has no minimum and
training runs off to -infinity. As the functional mechanism does (Zhang et
al., VLDB 2012, "regularisation" and "spectral trimming"), we repair the
*released* noisy coefficient rather than the noise: with ``M`` the symmetric
part of ``lambda2 + chi2`` and ``M = Q diag(mu) Q^T``, the quadratic term uses

    M+ = Q diag(max(mu, c)) Q^T,      c = min_curvature >= 0,

i.e. ``L~`` gains ``1/8 sum_k W'_k^T P W'_k`` with ``P = Q diag(max(c - mu,
0)) Q^T``. ``P`` is a function of the noisy coefficient only (post-processing,
no privacy cost), is computed with the gradient stopped, and vanishes when
the noisy form already has curvature >= c everywhere. With ``c > 0`` the loss
is strongly convex in ``W'`` and bounded below. Under replicas, ``lambda2``
is first averaged over them (the coefficient of the global batch, whose
sensitivity is no larger), so N replicas and one replica holding their N
batches give the same loss.

Caveats, stated rather than hidden:

* ``Delta3 = 2 |h_pi|`` is the paper's value, taken as given. A direct L1
  bound on the two coefficient blocks above (per example ``E K / 2`` for
  lambda1 with one-hot labels, ``E^2`` for lambda2) would be larger; pass
  ``delta3`` explicitly to use another bound.
* The original code does not perturb coefficients: it adds
  ``mean(|chi * W_out|)`` (``chi ~ Lap(b3)^E`` drawn once) to the loss. We
  follow the paper's functional mechanism instead.
"""

from typing import Optional, Tuple

import tensorflow as tf

from tfdp import _validation
from tfdp.privacy import mechanisms
from tfdp.stobatch import budget as budget_lib

_LN2 = 0.6931471805599453


def taylor_cross_entropy(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Per-example second-order Taylor sigmoid cross-entropy, summed over classes.

  ``sum_k [max(z_k, 0) - z_k y_k + ln 2 - |z_k|/2 + z_k^2/8]``.

  Args:
    y_true: One-hot (or {0,1}) labels, [batch, K].
    logits: z, [batch, K].

  Returns:
    A [batch] tensor.
  """
  logits = tf.convert_to_tensor(logits)
  y_true = tf.cast(y_true, logits.dtype)
  terms = (tf.nn.relu(logits) - logits * y_true + _LN2
           - 0.5 * tf.abs(logits) + 0.125 * tf.square(logits))
  return tf.reduce_sum(terms, axis=-1)


def combine_benign_adversarial(benign_loss: tf.Tensor,
                               adversarial_loss: tf.Tensor,
                               alpha: float = 1.5) -> tf.Tensor:
  """``(L_benign + alpha L_adv) / (1 + alpha)``, StoBatch's training loss.

  For `NoisyTaylorLoss` the trainer computes this combination as one loss
  with example weights (`NoisyTaylorLoss.__call__`'s ``example_weights``),
  so that the noise and the curvature floor act once, on the combined
  coefficients.

  Args:
    benign_loss: L_benign (any shape).
    adversarial_loss: L_adv (same shape).
    alpha: >= 0; 1.5 in StoBatch.

  Returns:
    The combined loss.
  """
  alpha = _validation.check_non_negative("alpha", alpha)
  return (benign_loss + alpha * adversarial_loss) / (1.0 + alpha)


class NoisyTaylorLoss(tf.Module):
  """The functional-mechanism (noisy-coefficient) Taylor loss of the output layer.

  Holds, for each of ``num_draws`` fixed batches d, ``chi1[d]`` ((E+1) x K)
  and ``chi2[d]`` ((E+1) x (E+1)), Laplace with scale ``b3 = Delta3 / (m
  epsilon_out)`` drawn once and independently (non-trainable variables,
  checkpointed with the module): batch d's noisy coefficients are its data
  terms plus its own draw, so the coefficients of all the disjoint batches
  together are epsilon_out-DP by parallel composition. It computes

      L~ = sum_i w_i T(z_i, y_i) + sum W' * chi1~ + 1/8 sum_k W'_k^T chi2~ W'_k
           + 1/8 sum_k W'_k^T P W'_k,   chi~ = sum_d v_d chi[d],

  with ``z = h W + b``, ``W' = [W; b]``, example weights ``w_i`` (``1/m``
  by default), ``v_d = sum_{i in batch d} w_i`` the weight of batch d's
  data in the loss (so each batch's noise enters with its data), and ``P``
  the curvature floor (see the module docstring).

  Example:

  >>> loss = NoisyTaylorLoss(hidden_width=4, num_classes=3, batch_size=8,
  ...                        epsilon_out=1.0, seed=0)
  >>> h = tf.zeros([8, 4]); y = tf.one_hot(tf.zeros([8], tf.int32), 3)
  >>> loss(y, h, tf.zeros([4, 3]), tf.zeros([3])).shape
  TensorShape([])

  Args:
    hidden_width: E, the last hidden layer's width, >= 1.
    num_classes: K, >= 1.
    batch_size: m, >= 1.
    epsilon_out: The output layer's budget, > 0.
    delta3: The sensitivity; default ``2 E`` (the paper's Delta3).
    use_bias: Whether the output layer has a bias (adds the constant feature).
    min_curvature: c >= 0, the least eigenvalue the noisy quadratic
      coefficient is raised to (0 only removes negative curvature, which can
      leave the loss unbounded along flat directions).
    num_draws: Independent draws, one per fixed batch, >= 1.
    seed: Optional int >= 0 making the draw deterministic.
    name: Module name.
  """

  def __init__(self, hidden_width: int, num_classes: int, batch_size: int,
               epsilon_out: float, delta3: Optional[float] = None,
               use_bias: bool = True, min_curvature: float = 0.1,
               num_draws: int = 1, seed: Optional[int] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.hidden_width = _validation.check_positive_int("hidden_width",
                                                       hidden_width)
    self.num_classes = _validation.check_positive_int("num_classes",
                                                      num_classes)
    self.batch_size = _validation.check_positive_int("batch_size", batch_size)
    self.epsilon_out = _validation.check_positive("epsilon_out", epsilon_out)
    self.delta3 = (budget_lib.output_sensitivity(self.hidden_width)
                   if delta3 is None
                   else _validation.check_positive("delta3", delta3))
    if not isinstance(use_bias, bool):
      raise ValueError(f"use_bias must be True or False, got {use_bias!r}")
    self.use_bias = use_bias
    self.min_curvature = _validation.check_non_negative("min_curvature",
                                                        min_curvature)
    if seed is not None:
      _validation.check_non_negative_int("seed", seed)
    self.seed = seed
    # b3 = Delta3 / (m epsilon_out).
    self.scale = mechanisms.laplace_scale(self.delta3,
                                          self.batch_size * self.epsilon_out)
    self.num_draws = _validation.check_positive_int("num_draws", num_draws)
    rows = self.hidden_width + (1 if use_bias else 0)
    self.chi1 = tf.Variable(
        self._draw((self.num_draws, rows, self.num_classes), 0),
        trainable=False, name="chi1")
    self.chi2 = tf.Variable(self._draw((self.num_draws, rows, rows), 1),
                            trainable=False, name="chi2")

  def _draw(self, shape, offset: int, stateless: bool = True) -> tf.Tensor:
    seed = (tf.constant([self.seed, offset], tf.int64)
            if stateless and self.seed is not None else None)
    return mechanisms.laplace_noise(
        shape, l1_sensitivity=self.delta3,
        epsilon=self.batch_size * self.epsilon_out, seed=seed)

  def redraw(self) -> None:
    """Draws new chi1, chi2 (stateful)."""
    self.chi1.assign(self._draw(self.chi1.shape, 0, stateless=False))
    self.chi2.assign(self._draw(self.chi2.shape, 1, stateless=False))

  def augmented_weights(self, kernel: tf.Tensor,
                        bias: Optional[tf.Tensor] = None) -> tf.Tensor:
    """``W' = [W; b]`` ((E+1) x K), or ``W`` without a bias."""
    kernel = tf.convert_to_tensor(kernel)
    if self.use_bias:
      if bias is None:
        raise ValueError("bias is required when use_bias=True")
      return tf.concat([kernel, tf.reshape(tf.cast(bias, kernel.dtype),
                                           [1, -1])], axis=0)
    return kernel

  def draw_weights(self, example_weights: tf.Tensor,
                   draws: Optional[tf.Tensor] = None) -> tf.Tensor:
    """``v_d = sum_{i: draws_i = d} w_i``, [num_draws]; all on draw 0 if None.

    Raises:
      ValueError: without `draws` when there are several draws.
    """
    if draws is None:
      if self.num_draws > 1:
        raise ValueError(
            f"the output loss holds {self.num_draws} noise draws, one per "
            "fixed batch: pass draws= (each example's batch index)")
      return tf.reduce_sum(example_weights, keepdims=True)
    return tf.math.unsorted_segment_sum(example_weights, draws,
                                        self.num_draws)

  def mixed_noise(self, draw_weights: tf.Tensor, dtype) -> Tuple[tf.Tensor,
                                                                 tf.Tensor]:
    """``(chi1~, chi2~) = sum_d v_d (chi1[d], chi2[d])``."""
    v = tf.cast(draw_weights, dtype)
    return (tf.tensordot(v, tf.cast(self.chi1, dtype), axes=1),
            tf.tensordot(v, tf.cast(self.chi2, dtype), axes=1))

  def noise_term(self, kernel: tf.Tensor, bias: Optional[tf.Tensor] = None,
                 draw_weights: Optional[tf.Tensor] = None) -> tf.Tensor:
    """``sum W' * chi1~ + 1/8 sum_k W'_k^T chi2~ W'_k`` (scalar).

    `draw_weights`: v [num_draws] (`draw_weights`); default all on draw 0.
    """
    w = self.augmented_weights(kernel, bias)
    if draw_weights is None:
      draw_weights = tf.one_hot(0, self.num_draws, dtype=w.dtype)
    chi1, chi2 = self.mixed_noise(draw_weights, w.dtype)
    return (tf.reduce_sum(w * chi1)
            + 0.125 * tf.reduce_sum(w * tf.matmul(chi2, w)))

  def augmented_hidden(self, hidden: tf.Tensor) -> tf.Tensor:
    """``h' = [h, 1]`` ([batch, E+1]), or ``h`` without a bias."""
    if self.use_bias:
      return tf.concat([hidden, tf.ones_like(hidden[:, :1])], axis=1)
    return hidden

  def curvature_floor(self, hidden: tf.Tensor, example_weights: tf.Tensor,
                      draw_weights: Optional[tf.Tensor] = None) -> tf.Tensor:
    """``P = Q diag(max(c - mu, 0)) Q^T`` for the noisy coefficient ``M``.

    ``M = Q diag(mu) Q^T`` is the symmetric part of ``lambda2 + chi2~`` with
    ``lambda2 = sum_i w_i h'_i h'_i^T``, averaged over replicas when called
    in a replica context (each replica's batches bring their own draws, so
    the noisy sum is averaged, as one replica holding all the batches would
    have it). Gradient stopped.

    Args:
      hidden: h, [batch, E].
      example_weights: w, [batch].
      draw_weights: v, [num_draws]; default all on draw 0.

    Returns:
      P, [E+1, E+1] (or [E, E] without a bias).
    """
    hidden = tf.stop_gradient(self.augmented_hidden(hidden))
    lambda2 = tf.matmul(hidden * example_weights[:, None], hidden,
                        transpose_a=True)
    if draw_weights is None:
      draw_weights = tf.one_hot(0, self.num_draws, dtype=lambda2.dtype)
    _, chi2 = self.mixed_noise(draw_weights, lambda2.dtype)
    noisy = lambda2 + 0.5 * (chi2 + tf.transpose(chi2))
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      noisy = context.all_reduce(tf.distribute.ReduceOp.MEAN, noisy)
    mu, q = tf.linalg.eigh(noisy)
    lift = tf.nn.relu(tf.cast(self.min_curvature, mu.dtype) - mu)
    return tf.stop_gradient(tf.matmul(q * lift[None, :], q,
                                      transpose_b=True))

  def __call__(self, y_true: tf.Tensor, hidden: tf.Tensor, kernel: tf.Tensor,
               bias: Optional[tf.Tensor] = None,
               example_weights: Optional[tf.Tensor] = None,
               draws: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The noisy batch loss L~ (scalar), with the curvature floor.

    Args:
      y_true: One-hot labels, [batch, K].
      hidden: The clipped last hidden layer h, [batch, E].
      kernel: W, [E, K].
      bias: b, [K] (required when ``use_bias``).
      example_weights: ``w_i >= 0`` summing to 1, [batch]; default ``1 /
        batch``. Each must be at most ``1 / m`` for ``Delta3`` to hold (the
        caller's duty; StoBatch's ``(L_benign + alpha L_adv) / (1 + alpha)``
        over two batches of m gives ``1 / ((1 + alpha) m)`` and ``alpha /
        ((1 + alpha) m)``).
      draws: Each example's fixed-batch index, [batch] (required with
        several draws): batch d's noise enters with weight ``v_d``.

    Returns:
      ``sum_i w_i T(h_i W + b, y_i) + noise_term(W, b)
      + 1/8 sum_k W'_k^T P W'_k``.
    """
    kernel = tf.convert_to_tensor(kernel)
    hidden = tf.cast(hidden, kernel.dtype)
    logits = tf.matmul(hidden, kernel)
    if self.use_bias:
      if bias is None:
        raise ValueError("bias is required when use_bias=True")
      logits = logits + tf.cast(bias, kernel.dtype)
    if example_weights is None:
      rows = tf.cast(tf.shape(hidden)[0], kernel.dtype)
      example_weights = tf.ones_like(logits[:, 0]) / rows
    example_weights = tf.cast(example_weights, kernel.dtype)
    exact = tf.reduce_sum(example_weights
                          * taylor_cross_entropy(y_true, logits))
    w = self.augmented_weights(kernel, bias)
    draw_weights = self.draw_weights(example_weights, draws)
    floor = self.curvature_floor(hidden, example_weights, draw_weights)
    return (exact + self.noise_term(kernel, bias, draw_weights)
            + 0.125 * tf.reduce_sum(w * tf.matmul(floor, w)))
