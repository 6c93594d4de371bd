"""Evaluating a StoBatch model: accuracy, robust accuracy, certified accuracy.

The deployed classifier is the *noisy* one: ``f(x + chi)``, chi ~ Lap(b)
per input coordinate, drawn afresh at every forward pass, where ``f`` is the
trained network with its first layer's input noise switched off (its hidden
noise keeps fixed draw 0, that of the first fixed batch, a constant offset;
the other layers are per-example, GroupNorm included). Its prediction at x is the expected vote
``argmax_k P(vote = k | x)``, estimated by Monte Carlo over `num_samples`
draws (`tfdp.robust.certification.sample_votes`).

Certificate (PixelDP, Laplace; derivation in docs/certification.md and
docs/stobatch.md): an attack of size kappa in the L-p norm moves x by at
most ``kappa d^(1 - 1/p)`` in L1 (d input coordinates: d for L-inf,
sqrt(d) for L2, 1 for L1), so the vote is ``eps = kappa Delta / b``-DP with
``Delta = d^(1 - 1/p)`` and the expected vote cannot change while
``p1 > exp(2 eps) p2``, with p1, p2 the simultaneous Clopper-Pearson bounds
(`class_probability_bounds`, Bonferroni over classes, confidence 1 - alpha):
radius ``b ln(p1 / p2) / (2 Delta)`` (`laplace_radius`). The noise scale b
defaults to the model's training input-noise scale; any b is sound as long
as the votes use it.

Attacks (cleverhans, untargeted, on the true label) are crafted against the
deterministic ``f`` (exact gradients; the noise would only blur them) and
judged by the noisy classifier's vote: robust accuracy at kappa counts the
points whose votes are right both clean and attacked. The empirical
soundness check counts, per kappa, the points certified at kappa and those
among them whose PGD example at kappa changes the vote prediction (should be
0 up to Monte Carlo error on the attacked vote).
"""

import contextlib
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp.robust import certification
from tfdp.robust import smoothing
from tfdp.stobatch import models as sb_models
from tfdp.stobatch import trainer as sb_trainer

EVAL_ATTACKS = ("fgsm", "ifgsm", "mim", "pgd")
NORMS = ("inf", "2", "1")
CERTIFICATES = ("pixeldp", "smoothing")


@contextlib.contextmanager
def _noise_modes(model: sb_models.StoBatchNet, input_mode: str,
                 hidden_mode: str):
  """Sets the first layer's inference noise modes while a call is traced."""
  ae = model.autoencoder
  saved = (ae.input_noise.inference_noise, ae.hidden_noise.inference_noise)
  ae.input_noise.inference_noise = input_mode
  ae.hidden_noise.inference_noise = hidden_mode
  try:
    yield
  finally:
    ae.input_noise.inference_noise, ae.hidden_noise.inference_noise = saved


def base_fn(model: sb_models.StoBatchNet) -> Callable[[tf.Tensor], tf.Tensor]:
  """f: the network without input noise (a tf.function).

  Its hidden noise is the fixed draw 0 for a model trained with the DP
  draws on its classifier path (``forward_noise="dp"``), none otherwise.
  """
  hidden_mode = "fixed" if model.autoencoder.forward_noise == "dp" else "none"

  @tf.function
  def fn(x):
    with _noise_modes(model, "none", hidden_mode):
      return model(x, training=False)

  return fn


def noisy_fn(model: sb_models.StoBatchNet, scale: float,
             kind: str = "laplace") -> Callable[[tf.Tensor], tf.Tensor]:
  """``x -> f(x + chi)``, chi fresh per coordinate and call.

  chi ~ Lap(scale) (`kind` "laplace") or N(0, scale^2) ("gaussian").
  """
  scale = _validation.check_positive("scale", scale)
  f = base_fn(model)

  @tf.function
  def fn(x):
    return f(sb_trainer.input_noise(x, kind, scale))

  return fn


def l1_sensitivity(input_shape: Sequence[int], norm: str) -> float:
  """``Delta = d^(1 - 1/p)``: L1 change per unit attack in the L-p norm."""
  _validation.check_choice("norm", norm, NORMS)
  d = int(np.prod(input_shape))
  return {"inf": float(d), "2": float(np.sqrt(d)), "1": 1.0}[norm]


def _vote_predictions(fn, x, num_samples, num_classes, batch_size):
  counts = certification.sample_votes(fn, x, num_samples, num_classes,
                                      batch_size=batch_size)
  return counts, np.argmax(counts, axis=-1)


def _attack_fn(name, model_fn, steps, clip_min, clip_max, norm):
  # One trace per attack (and batch shape): the size is a tensor.
  return tf.function(lambda xb, yb, s: sb_trainer.craft(
      name, model_fn, xb, yb, s, steps, clip_min, clip_max, norm))


def _attack(fn, x, y, size, batch_size):
  out = []
  for start in range(0, len(x), batch_size):
    out.append(fn(tf.constant(x[start:start + batch_size]),
                  tf.constant(y[start:start + batch_size]),
                  tf.constant(size, tf.float32)).numpy())
  return np.concatenate(out)


def check_inputs(x: Any, y: Any, kappas: Sequence[float],
                 attacks: Sequence[str], attack_steps: int,
                 num_samples: int, norm: str,
                 norms: Sequence[str] = NORMS):
  """Validates the arguments shared by the evaluations; returns x, y, kappas.

  Raises:
    ValueError: naming the argument out of range.
  """
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int64)
  if len(x) == 0 or len(x) != len(y):
    raise ValueError(f"x and y must be non-empty and of one length, got "
                     f"{len(x)} and {len(y)}")
  kappas = [_validation.check_positive("kappas", k) for k in kappas]
  for attack in attacks:
    _validation.check_choice("attacks", attack, EVAL_ATTACKS)
  _validation.check_choice("norm", norm, norms)
  if attacks and norm == "1":
    raise ValueError("norm must be 'inf' or '2' when attacks are run "
                     "(cleverhans has no L1 PGD)")
  _validation.check_positive_int("attack_steps", attack_steps)
  _validation.check_positive_int("num_samples", num_samples)
  return x, y, kappas


def evaluate_noisy_classifier(
    base: Callable[[tf.Tensor], tf.Tensor],
    noisy: Callable[[tf.Tensor], tf.Tensor],
    radius_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray, y: np.ndarray, *, num_classes: int,
    kappas: Sequence[float], attacks: Sequence[str], attack_steps: int,
    num_samples: int, alpha: float, norm: str, clip_min: float,
    clip_max: float, batch_size: int, vote_batch_size: int,
    attack_votes: Optional[int] = None
) -> Dict[str, Any]:
  """The evaluation shared by StoBatch and SecureSGD (inputs validated).

  Args:
    base: The network without its inference noise (attacks use it).
    noisy: The deployed classifier, fresh noise at every call (votes).
    radius_fn: ``(p1, p2) -> radius`` of the mechanism's certificate.
    x, y, num_classes, kappas, attacks, attack_steps, num_samples, alpha,
    norm, clip_min, clip_max, batch_size, vote_batch_size, attack_votes: As
      in `evaluate`.

  Returns:
    The dict of `evaluate` without ``noise_scale`` and ``sensitivity``.
  """
  base_pred = np.concatenate([
      np.argmax(base(tf.constant(x[i:i + batch_size])).numpy(), -1)
      for i in range(0, len(x), batch_size)])
  counts, pred = _vote_predictions(noisy, x, num_samples, num_classes,
                                   vote_batch_size)
  correct = pred == y
  top, p1, p2 = certification.class_probability_bounds(counts, alpha)
  radius = radius_fn(p1, p2)
  key = [f"{kappa:g}" for kappa in kappas]
  certified_acc = certification.certified_accuracy(top == y, radius, kappas)

  robust: Dict[str, Dict[str, float]] = {}
  soundness: Dict[str, Dict[str, int]] = {}
  for attack in attacks:
    robust[attack] = {}
    fn = _attack_fn(attack, base, attack_steps, clip_min, clip_max, norm)
    for kappa, name in zip(kappas, key):
      x_adv = _attack(fn, x, y, kappa, batch_size)
      _, adv_pred = _vote_predictions(noisy, x_adv,
                                      attack_votes or num_samples,
                                      num_classes, vote_batch_size)
      robust[attack][name] = float(np.mean(correct & (adv_pred == y)))
      if attack == "pgd":
        certified = radius > kappa
        soundness[name] = {
            "certified": int(np.sum(certified)),
            "flipped": int(np.sum(certified & (adv_pred != top))),
        }
  return {
      "conventional_accuracy": float(np.mean(correct)),
      "base_accuracy": float(np.mean(base_pred == y)),
      "robust_accuracy": robust,
      "certified_accuracy": {n: float(a) for n, a in zip(key,
                                                         certified_acc)},
      "soundness": soundness,
      "median_radius": float(np.median(radius)),
      "norm": norm,
      "num_samples": num_samples,
      "attack_votes": attack_votes or num_samples,
      "alpha": float(alpha),
      "examples": int(len(x)),
  }


def evaluate(model: sb_models.StoBatchNet, x: Any, y: Any, *,
             kappas: Sequence[float],
             attacks: Sequence[str] = EVAL_ATTACKS,
             attack_steps: int = 10, num_samples: int = 100,
             alpha: float = 0.05, noise_scale: Optional[float] = None,
             norm: str = "inf", clip_min: float = -1.0,
             clip_max: float = 1.0, batch_size: int = 500,
             vote_batch_size: int = 500,
             certificate: str = "pixeldp",
             attack_votes: Optional[int] = None) -> Dict[str, Any]:
  """Conventional, robust and certified accuracy, and the soundness check.

  Two certificates: "pixeldp" (the paper's: Laplace noise of scale b on the
  input, the PixelDP bound over the L1 sensitivity of the attack's ball,
  any norm) and "smoothing" (Gaussian noise of standard deviation b on the
  input, Cohen et al.'s L2 radius; for models trained with that noise,
  `TrainerConfig(input_noise="gaussian")`).

  Args:
    model: A trained `StoBatchNet`.
    x: Inputs [N, ...] in the architecture's range [clip_min, clip_max].
    y: Integer labels [N].
    kappas: Attack sizes for robust accuracy, certified accuracy and the
      soundness check (each > 0), in the `norm`.
    attacks: Subset of ("fgsm", "ifgsm", "mim", "pgd"); "pgd" is needed for
      the soundness check.
    attack_steps: Iterations of the iterative attacks.
    num_samples: Monte Carlo noise draws per example (the clean votes:
      conventional accuracy and the certificate).
    alpha: The certificate holds with probability >= 1 - alpha per example.
    noise_scale: The inference noise's scale b (Laplace scale, or the
      Gaussian's standard deviation); default the model's training
      input-noise scale.
    norm: "inf", "2" or "1" (attacks: "inf" or "2").
    clip_min: Lowest valid input.
    clip_max: Highest valid input.
    batch_size: Examples attacked at once.
    vote_batch_size: Rows per forward pass when voting.
    certificate: "pixeldp" or "smoothing" (L2 only).
    attack_votes: Noise draws that decide the deployed prediction on each
      attacked input (robust accuracy, the soundness check's flips); default
      `num_samples`. These votes (attacks x kappas of them) dominate the
      cost; fewer only make the majority noisier, never the certificate.

  Returns:
    A JSON-ready dict: ``conventional_accuracy``, ``base_accuracy`` (f,
    no input noise), ``robust_accuracy[attack][kappa]``,
    ``certified_accuracy[kappa]``, ``soundness[kappa] = {"certified": n,
    "flipped": k}``, ``median_radius`` and the settings (``noise_scale``,
    ``sensitivity``, ``norm``, ``num_samples``, ``alpha``, ``examples``).
    Kappas are keyed by ``f"{kappa:g}"``.

  Raises:
    ValueError: on an argument out of range.
  """
  x, y, kappas = check_inputs(x, y, kappas, attacks, attack_steps,
                              num_samples, norm)
  if attack_votes is not None:
    _validation.check_positive_int("attack_votes", attack_votes)
  _validation.check_choice("certificate", certificate, CERTIFICATES)
  if certificate == "smoothing" and norm != "2":
    raise ValueError(f"certificate='smoothing' certifies L2 radii: norm must "
                     f"be '2', got {norm!r}")
  scale = (model.autoencoder.input_noise_scale if noise_scale is None
           else _validation.check_positive("noise_scale", noise_scale))
  sensitivity = l1_sensitivity(x.shape[1:], norm)
  if certificate == "smoothing":
    noisy = noisy_fn(model, scale, "gaussian")
    radius_fn = lambda p1, p2: smoothing.radius(p1, p2, scale)
  else:
    noisy = noisy_fn(model, scale)
    radius_fn = lambda p1, p2: certification.laplace_radius(
        p1, p2, sensitivity, scale)
  result = evaluate_noisy_classifier(
      base_fn(model), noisy, radius_fn, x, y, num_classes=model.num_classes,
      kappas=kappas, attacks=attacks,
      attack_steps=attack_steps, num_samples=num_samples, alpha=alpha,
      norm=norm, clip_min=clip_min, clip_max=clip_max,
      batch_size=batch_size, vote_batch_size=vote_batch_size,
      attack_votes=attack_votes)
  return dict(result, noise_scale=float(scale),
              sensitivity=float(sensitivity), certificate=certificate)


__all__ = ["CERTIFICATES", "EVAL_ATTACKS", "base_fn", "check_inputs",
           "evaluate", "evaluate_noisy_classifier", "l1_sensitivity",
           "noisy_fn"]
