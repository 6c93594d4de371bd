"""Gaussian noise augmentation inside DP-SGD, for randomized smoothing.

A classifier certified by randomized smoothing (`tfdp.robust.smoothing`,
Cohen et al. 2019) is the majority vote of a base classifier f under
Gaussian input noise, g(x) = argmax_k P(f(x + e) = k), e ~ N(0, sigma^2 I).
g is accurate and certifiably robust only if f classifies noisy inputs
well, so f is trained on them (Cohen et al., Sec. 3.3; with DP-SGD, DP-CERT,
Wu et al. 2024). `GaussianAugmentation` does that in
`tfdp.make_private(model, augmentation=...)`: at every training step each
input x_i of the batch becomes

    x_i' = x_i + e_i,   e_i ~ N(0, sigma^2 I), drawn afresh per example and
                        per step, independent of every example,

before per-example clipping; at inference (`model.predict`, `evaluate`, a
plain `model(x)`) nothing is added.

Why the DP guarantee survives. x_i' is a function of x_i and of noise that
does not depend on the data: a per-example pre-processing, like the
adversarial examples of `AdversarialTraining`. DP-SGD then clips the
gradient of l(f_w(x_i'), y_i) to norm C, so adding or removing one example
still changes the clipped sum by at most C, for every value of the
augmentation noise. The Gaussian mechanism of the step is therefore DP
conditionally on the augmentation noise, hence also unconditionally; the
batch sampling and the number of steps, hence the accounting, are those of
plain DP-SGD. The augmentation noise needs no secrecy (it is not the DP
noise, which `tfdp.privacy` draws from the OS's entropy): it is drawn from
TensorFlow's seeded generator, so `tf.keras.utils.set_random_seed`
reproduces it. Certifying the trained model with `tfdp.robust.smoothing` is
post-processing of the DP release: the certificate is Cohen et al.'s and
costs no privacy.

Augmentation multiplicity (each example's gradient averaged over K noisy
copies, then clipped, noise added once) is `tfdp.make_private(model,
augmult=K, augment=fn)` with fn drawing the noise for each row, e.g.
``lambda x: x + tf.random.normal(tf.shape(x), stddev=sigma)``; this class
draws one noisy version of each example per step.
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from tfdp import _validation


class GaussianAugmentation:
  """Gaussian noise on the inputs of each training step, per example.

  For `tfdp.make_private(model, augmentation=...)`: `perturb(model, x, y)`
  returns x + N(0, sigma^2 I), fresh for every example, coordinate and step.
  See the module docstring for why this keeps the DP guarantee.

  Args:
    sigma: standard deviation of the noise, > 0, in input units (e.g. 0.25
      for pixels in [0, 1]); use the same sigma to certify with
      `tfdp.robust.smoothing`.

  Raises:
    ValueError: if sigma is not a finite number > 0.

  Example:
    >>> model = tfdp.make_private(
    ...     model, augmentation=tfdp.robust.GaussianAugmentation(sigma=0.25))
  """

  def __init__(self, sigma: float):
    self._sigma = _validation.check_positive("sigma", sigma)

  sigma = property(lambda self: self._sigma, doc="Noise standard deviation.")

  def get_config(self) -> Dict[str, Any]:
    """The constructor arguments (JSON-serialisable)."""
    return {"sigma": self._sigma}

  def __repr__(self) -> str:
    return f"GaussianAugmentation(sigma={self._sigma!r})"

  def __eq__(self, other: Any) -> bool:
    return (isinstance(other, GaussianAugmentation) and
            self._sigma == other.sigma)

  def __hash__(self) -> int:
    return hash(("GaussianAugmentation", self._sigma))

  def perturb(self, model: Optional[tf.keras.Model], x: Any,
              y: Any = None) -> tf.Tensor:
    """x + N(0, sigma^2 I), drawn afresh at every call.

    Args:
      model: the model being trained (unused: the noise depends on nothing).
      x: the input batch, one floating-point tensor [B, ...].
      y: the labels (unused).

    Returns:
      A tensor like `x`, each coordinate plus its own N(0, sigma^2) draw.

    Raises:
      ValueError: if x is nested or not floating point.
    """
    del model, y  # The noise is independent of the model and the data.
    if tf.nest.is_nested(x):
      raise ValueError(
          "GaussianAugmentation needs the model input to be one tensor, got "
          f"a {type(x).__name__}")
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
      raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    return x + tf.random.normal(tf.shape(x), stddev=self._sigma,
                                dtype=x.dtype)
