"""StoBatch's privacy budget: sensitivities, the budget split and noise scales.

StoBatch (Phan et al., "Scalable Differential Privacy with Certified
Robustness in Adversarial Learning", ICML 2020) spends a pure-DP budget in two
places, each by the functional mechanism (Laplace noise on the coefficients of
a polynomial objective, drawn once):

* the DP auto-encoder that trains the first convolution ``W1`` (stride 2,
  output ``h x h x F``, kernel ``k x k``, ``C`` input channels), with budget
  ``epsilon_ae``:

      Delta2   = C (h^2 + 2) k^2
      gamma    = 2 Delta2 / (m sigma_max(W1))
      gamma_x  = Delta2 / m
      epsilon' = epsilon_ae / (1 + 1/gamma + 1/gamma_x)
      input noise   chi_x ~ Lap(Delta2 / (m epsilon'))       (added to x)
      hidden noise  chi_h ~ Lap(2 Delta2 / (m epsilon'))     (added to W1 * x)

  The auto-encoder is ``epsilon'/gamma_x + epsilon' + epsilon'/gamma =
  epsilon_ae``-DP (input noise, coefficient noise, hidden noise);
* the output layer's second-order Taylor loss, with budget ``epsilon_out``:

      Delta3 = 2 |h_pi|   (|h_pi| = width of the last hidden layer, clipped
                           to [-1, 1])
      output noise  chi_3 ~ Lap(Delta3 / (m epsilon_out))

so the whole model is ``epsilon = epsilon_ae + epsilon_out``-DP (pure DP,
``delta = 0``), whatever the number of steps, under the assumptions listed in
`ASSUMPTIONS` (and printed by `StoBatchBudget.summary`, with the `CAVEATS`
where our reading of the algorithm does not support the claim).

Paper versus original code, and what is not pinned down here:

* ``sigma_max(W1)``: the original code computes ``gamma`` once, from the
  largest singular value of ``W1`` reshaped to ``[k*k*C, F]`` right after its
  random initialisation (``sess.run(kernel1.initializer); _gamma =
  sess.run(gamma)``), and never updates it while ``W1`` trains. We could not
  check here whether the paper means ``W1`` at initialisation, a bound that
  holds throughout training (which training does not enforce), or something
  else. This module takes ``sigma_max_w1`` as an argument: pass
  `kernel_sigma_max` of the initial kernel to reproduce the code, or any
  upper bound you can enforce. Because ``epsilon'`` decreases as ``gamma``
  decreases (larger ``sigma_max``), a larger value is the conservative
  choice; the budget is only as sound as this value.
* ``Delta2`` and ``Delta3`` are taken from the paper/issue as stated, not
  re-derived here.
"""

import dataclasses
from typing import Tuple

import numpy as np

from tfdp import _validation

ASSUMPTIONS: Tuple[str, ...] = (
    "pure epsilon-DP (delta = 0) by the functional mechanism, independent of "
    "the number of training steps",
    "all Laplace noise (input, hidden, output coefficients) is drawn once "
    "before training, independently for each fixed batch, and each batch's "
    "draw is reused at every step (parallel composition over the batches)",
    "the training set is shuffled once into fixed, disjoint batches of size m "
    "(each example is in exactly one batch; examples for adversarial crafting "
    "come from those batches too)",
    "everything else (adversarial examples, the other layers, the "
    "per-example GroupNorms, the optimizer) only post-processes the noised "
    "quantities",
    "the last hidden layer is clipped to [-1, 1] (Delta3 = 2 x its width)",
    "inputs are bounded as Delta2 assumes (pixels in [-1, 1] in the "
    "original code); Delta2 and Delta3 are the paper's values, not "
    "re-derived here",
    "sigma_max(W1) is the value used for gamma (the original code uses W1 at "
    "initialisation)",
    "data augmentation that puts several copies of one example into the "
    "training set breaks these assumptions (each copy spends the budget "
    "again): refuse it or account for it",
)

# Where our reading of the algorithm does not support the claim above;
# printed with it so that nobody takes the epsilon on trust.
CAVEATS: Tuple[str, ...] = (
    "the layers between the first and the output layer are trained by the "
    "gradient of the noise-free part of the Taylor loss (the output noise "
    "does not depend on their weights), so their updates use the labels and "
    "the first layer's outputs without further noise; the paper counts them "
    "as post-processing, which we could not verify",
    "a batch's noise is fixed while its coefficients change with the "
    "weights at every step, so two steps' noisy objectives of one batch "
    "differ by an exact data-dependent term; that is sound only for fixed "
    "features (layers below the output layer not trained on the private "
    "labels meanwhile), which StoBatch's joint training does not have",
    "for a guarantee that rests on neither, train with DP-SGD "
    "(tfdp.make_private; SecureSGD in experiments.securesgd_tinyimagenet)",
)


def first_layer_sensitivity(channels: int, kernel_size: int,
                            output_size: int) -> float:
  """Delta2 = C (h^2 + 2) k^2, the DP auto-encoder's sensitivity.

  Args:
    channels: C, input channels, >= 1.
    kernel_size: k, the square kernel's side, >= 1.
    output_size: h, the side of the first conv's square output, >= 1.

  Returns:
    ``C (h^2 + 2) k^2`` as a float.

  Raises:
    ValueError: on an argument out of range.
  """
  c = _validation.check_positive_int("channels", channels)
  k = _validation.check_positive_int("kernel_size", kernel_size)
  h = _validation.check_positive_int("output_size", output_size)
  return float(c * (h * h + 2) * k * k)


def output_sensitivity(hidden_width: int) -> float:
  """Delta3 = 2 |h_pi|, the output layer's sensitivity.

  Args:
    hidden_width: |h_pi|, the width of the last hidden layer (clipped to
      [-1, 1]), >= 1.

  Returns:
    ``2 * hidden_width`` as a float.
  """
  return 2.0 * _validation.check_positive_int("hidden_width", hidden_width)


def kernel_sigma_max(kernel) -> float:
  """Largest singular value of a conv kernel reshaped to ``[k*k*C, F]``.

  This is what the original code calls ``sensitivity``: the spectral norm of
  ``W1`` as a ``(k k C) x F`` matrix (``tf.svd`` of its transpose, same
  singular values).

  Args:
    kernel: An array (or tensor / variable) of shape ``[k, k, C, F]``.

  Returns:
    sigma_max as a float.

  Raises:
    ValueError: if `kernel` is not rank 4.
  """
  w = np.asarray(kernel, dtype=np.float64)
  if w.ndim != 4:
    raise ValueError(
        f"kernel must have rank 4 ([k, k, C, F]), got shape {w.shape}")
  return float(np.linalg.norm(w.reshape(-1, w.shape[-1]), ord=2))


@dataclasses.dataclass(frozen=True)
class StoBatchBudget:
  """The StoBatch budget split and noise scales (see the module docstring).

  Attributes:
    epsilon_ae: Budget of the DP auto-encoder (first layer).
    epsilon_out: Budget of the output layer's Taylor loss.
    batch_size: m.
    delta2: C (h^2 + 2) k^2.
    delta3: 2 |h_pi|.
    sigma_max_w1: The sigma_max(W1) used for gamma.
    gamma: 2 Delta2 / (m sigma_max(W1)).
    gamma_x: Delta2 / m.
    epsilon_prime: epsilon_ae / (1 + 1/gamma + 1/gamma_x).
    input_noise_scale: Laplace scale Delta2 / (m epsilon') of the input noise.
    hidden_noise_scale: Laplace scale 2 Delta2 / (m epsilon') of the noise on
      the first conv's output.
    output_noise_scale: Laplace scale Delta3 / (m epsilon_out) of the noise on
      the output loss's coefficients.
  """
  epsilon_ae: float
  epsilon_out: float
  batch_size: int
  delta2: float
  delta3: float
  sigma_max_w1: float
  gamma: float
  gamma_x: float
  epsilon_prime: float
  input_noise_scale: float
  hidden_noise_scale: float
  output_noise_scale: float

  @property
  def epsilon(self) -> float:
    """Total pure-DP epsilon, epsilon_ae + epsilon_out (delta = 0)."""
    return self.epsilon_ae + self.epsilon_out

  def summary(self) -> str:
    """A human-readable statement of the guarantee and its assumptions."""
    lines = [
        f"StoBatch: epsilon = epsilon_ae + epsilon_out = {self.epsilon_ae:g} "
        f"+ {self.epsilon_out:g} = {self.epsilon:g} (pure DP, delta = 0)",
        f"  batch size m = {self.batch_size}, Delta2 = {self.delta2:g}, "
        f"Delta3 = {self.delta3:g}, sigma_max(W1) = {self.sigma_max_w1:g}",
        f"  gamma = {self.gamma:g}, gamma_x = {self.gamma_x:g}, "
        f"epsilon' = {self.epsilon_prime:g}",
        f"  Laplace scales: input {self.input_noise_scale:g}, hidden "
        f"{self.hidden_noise_scale:g}, output coefficients "
        f"{self.output_noise_scale:g}",
        "Assumptions:",
    ]
    lines += [f"  - {a}" for a in ASSUMPTIONS]
    lines.append("Caveats (read before relying on epsilon):")
    lines += [f"  - {c}" for c in CAVEATS]
    return "\n".join(lines)


def stobatch_budget(*, epsilon_ae: float, epsilon_out: float,
                    batch_size: int, channels: int, kernel_size: int,
                    output_size: int, sigma_max_w1: float,
                    hidden_width: int) -> StoBatchBudget:
  """Computes StoBatch's budget split and Laplace noise scales.

  ``Delta2 = C (h^2 + 2) k^2``, ``gamma = 2 Delta2 / (m sigma_max(W1))``,
  ``gamma_x = Delta2 / m``, ``epsilon' = epsilon_ae / (1 + 1/gamma +
  1/gamma_x)``; input scale ``Delta2 / (m epsilon')``, hidden scale
  ``2 Delta2 / (m epsilon')``; ``Delta3 = 2 |h_pi|``, output scale
  ``Delta3 / (m epsilon_out)``; total ``epsilon_ae + epsilon_out``.

  Args:
    epsilon_ae: Budget of the DP auto-encoder, > 0.
    epsilon_out: Budget of the output layer, > 0.
    batch_size: m, the size of each fixed disjoint batch, >= 1.
    channels: C, input channels, >= 1.
    kernel_size: k, the first conv's kernel side, >= 1.
    output_size: h, the first conv's output side, >= 1.
    sigma_max_w1: sigma_max(W1) or an upper bound of it, > 0 (see the module
      docstring for what the original code uses).
    hidden_width: |h_pi|, the width of the last hidden layer, >= 1.

  Returns:
    A `StoBatchBudget`.

  Raises:
    ValueError: on an argument out of range.
  """
  epsilon_ae = _validation.check_positive("epsilon_ae", epsilon_ae)
  epsilon_out = _validation.check_positive("epsilon_out", epsilon_out)
  m = _validation.check_positive_int("batch_size", batch_size)
  sigma_max_w1 = _validation.check_positive("sigma_max_w1", sigma_max_w1)
  delta2 = first_layer_sensitivity(channels, kernel_size, output_size)
  delta3 = output_sensitivity(hidden_width)
  gamma = 2.0 * delta2 / (m * sigma_max_w1)
  gamma_x = delta2 / m
  epsilon_prime = epsilon_ae / (1.0 + 1.0 / gamma + 1.0 / gamma_x)
  return StoBatchBudget(
      epsilon_ae=epsilon_ae,
      epsilon_out=epsilon_out,
      batch_size=m,
      delta2=delta2,
      delta3=delta3,
      sigma_max_w1=sigma_max_w1,
      gamma=gamma,
      gamma_x=gamma_x,
      epsilon_prime=epsilon_prime,
      input_noise_scale=delta2 / (m * epsilon_prime),
      hidden_noise_scale=2.0 * delta2 / (m * epsilon_prime),
      output_noise_scale=delta3 / (m * epsilon_out),
  )
