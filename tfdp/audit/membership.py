"""Membership inference against a Keras classifier, through TF Privacy.

* `membership_attack`: TensorFlow Privacy's attacks
  (`privacy_tests.membership_inference_attack.run_attacks`: a threshold on
  the loss, and classifiers on the logits and losses), reported as the best
  attack's AUC, attacker advantage (max TPR - FPR) and the epsilon lower
  bound TF Privacy derives from its ROC curve.
* `lira_attack`: the likelihood-ratio attack (Carlini et al. 2022) with a
  few shadow models: each example's logit-scaled confidence
  log(p_y / (1 - p_y)) under models trained with and without it, fitted by
  Gaussians (TF Privacy's `advanced_mia.compute_score_lira`).

TF Privacy ships these in the `tensorflow-empirical-privacy` package
(`pip install -e ".[tf215,audit]"`, TensorFlow 2.15 only); this module
imports it when first used.

Example:
  >>> report = membership_attack(model, (x_train, y_train), (x_test, y_test))
  >>> report.auc, report.attacker_advantage
"""

import dataclasses
import importlib
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from sklearn import metrics
import tensorflow as tf

from tfdp import _optional
from tfdp import _validation

Examples = Tuple[np.ndarray, np.ndarray]


_PACKAGE = ("tensorflow_privacy.privacy.privacy_tests."
            "membership_inference_attack")
_MODULES = tuple(f"{_PACKAGE}.{name}" for name in (
    "membership_inference_attack", "data_structures", "advanced_mia"))


def missing_privacy_tests() -> Optional[str]:
  """None if TF Privacy's privacy_tests import, else what to install.

  They ship in the tensorflow-empirical-privacy package, not in the
  tensorflow-privacy wheel, and import on TensorFlow 2.15 only.
  """
  for module in _MODULES:
    missing = _optional.missing_tensorflow_privacy(module)
    if missing:
      return ("tfdp.audit's membership inference uses TensorFlow Privacy's "
              "privacy_tests (package tensorflow-empirical-privacy), which "
              f"the tensorflow-privacy wheel does not include. {missing}")
  return None


def _privacy_tests():
  """(membership_inference_attack, data_structures, advanced_mia) modules.

  Raises:
    ImportError: naming what to install (`missing_privacy_tests`).
  """
  missing = missing_privacy_tests()
  if missing:
    raise ImportError(missing)
  return tuple(importlib.import_module(module) for module in _MODULES)


@dataclasses.dataclass(frozen=True)
class MembershipReport:
  """The strongest attack's figures, and every attack's.

  Attributes:
    auc: the area under the best attack's ROC curve (0.5: no better than a
      coin).
    attacker_advantage: max over thresholds of TPR - FPR.
    epsilon_lower_bound: the largest epsilon lower bound over the attacks
      (TF Privacy's, from the ROC curve at its default confidence); NaN if
      none was computed.
    attack: the name of the attack with the largest AUC.
    by_attack: {attack name: {"auc", "attacker_advantage",
      "epsilon_lower_bound"}}.
  """
  auc: float
  attacker_advantage: float
  epsilon_lower_bound: float
  attack: str
  by_attack: Dict[str, Dict[str, float]]


def _check_examples(name: str, examples: Examples) -> Examples:
  x, y = examples
  if len(x) == 0 or len(x) != len(y):
    raise ValueError(f"{name} must be (x, y) with the same number (>= 1) of "
                     f"rows, got {len(x)} and {len(y)}")
  return np.asarray(x), np.asarray(y).astype(np.int64).reshape(-1)


def per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Sparse cross-entropy of each row of logits (float64, stable)."""
  logits = np.asarray(logits, dtype=np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_norm = np.log(np.exp(shifted).sum(axis=1))
  return log_norm - shifted[np.arange(len(labels)), labels]


def membership_attack(model: tf.keras.Model, members: Examples,
                      non_members: Examples, *,
                      attacks: Sequence[str] = ("THRESHOLD_ATTACK",
                                                "LOGISTIC_REGRESSION"),
                      batch_size: int = 256) -> MembershipReport:
  """Runs TF Privacy's membership inference attacks on `model`.

  Args:
    model: a classifier that returns logits.
    members: (x, y) it was trained on.
    non_members: (x, y) from the same distribution, not trained on.
    attacks: names of TF Privacy `AttackType`s.
    batch_size: for `model.predict`.

  Returns:
    A `MembershipReport`.
  """
  mia, data_structures, _ = _privacy_tests()
  x_in, y_in = _check_examples("members", members)
  x_out, y_out = _check_examples("non_members", non_members)
  try:
    attack_types = [data_structures.AttackType[name] for name in attacks]
  except KeyError as error:
    raise ValueError(
        f"attacks must name TF Privacy AttackTypes "
        f"({[t.name for t in data_structures.AttackType]}), got "
        f"{list(attacks)}") from error
  logits_in = model.predict(x_in, batch_size=batch_size, verbose=0)
  logits_out = model.predict(x_out, batch_size=batch_size, verbose=0)
  attack_input = data_structures.AttackInputData(
      logits_train=logits_in, logits_test=logits_out, labels_train=y_in,
      labels_test=y_out, loss_train=per_example_loss(logits_in, y_in),
      loss_test=per_example_loss(logits_out, y_out))
  results = mia.run_attacks(
      attack_input,
      data_structures.SlicingSpec(entire_dataset=True,
                                  by_class=False),
      attack_types=attack_types)
  by_attack = {}
  for result in results.single_attack_results:
    bound = np.asarray(result.get_epsilon_lower_bound(), dtype=np.float64)
    name = f"{result.attack_type.name}/{result.slice_spec}"
    by_attack[name] = {
        "auc": float(result.get_auc()),
        "attacker_advantage": float(result.get_attacker_advantage()),
        "epsilon_lower_bound": float(bound.max()) if bound.size else np.nan,
    }
  best = max(by_attack, key=lambda name: by_attack[name]["auc"])
  bounds = [v["epsilon_lower_bound"] for v in by_attack.values()
            if np.isfinite(v["epsilon_lower_bound"])]
  return MembershipReport(
      auc=by_attack[best]["auc"],
      attacker_advantage=max(v["attacker_advantage"]
                             for v in by_attack.values()),
      epsilon_lower_bound=max(bounds) if bounds else float("nan"),
      attack=best, by_attack=by_attack)


@dataclasses.dataclass(frozen=True)
class LiraReport:
  """LiRA's result on the target model.

  Attributes:
    auc: the ROC AUC of the LiRA score over the population (members of the
      target against the rest).
    tpr_at_low_fpr: the TPR at FPR = 0.1% (or the smallest FPR measured).
    shadow_models: the number of shadow models.
  """
  auc: float
  tpr_at_low_fpr: float
  shadow_models: int


def lira_attack(train_fn: Callable[[np.ndarray, np.ndarray], tf.keras.Model],
                population: Examples, *, shadow_models: int, seed: int,
                batch_size: int = 256) -> LiraReport:
  """The offline-online LiRA with `shadow_models` shadows and one target.

  Each of the shadow_models + 1 models trains (with `train_fn`) on a random
  half of `population`; the last is the target. For every example, its
  statistic log(p_y / (1 - p_y)) under the shadows that did and did not
  train on it gives TF Privacy's LiRA score against the target's statistic.

  Args:
    train_fn: trains a fresh classifier (logits) on (x, y) and returns it;
      train it as the model under audit is trained (DP or not).
    population: (x, y), the examples the halves are drawn from.
    shadow_models: >= 2.
    seed: for the halves.
    batch_size: for `model.predict`.

  Returns:
    A `LiraReport`.
  """
  _, _, advanced_mia = _privacy_tests()
  x, y = _check_examples("population", population)
  shadow_models = _validation.check_positive_int("shadow_models",
                                                 shadow_models)
  if shadow_models < 2:
    raise ValueError(f"shadow_models must be >= 2, got {shadow_models}")
  rng = np.random.default_rng(seed)
  included = rng.random([shadow_models + 1, len(x)]) < 0.5
  statistics = np.empty([shadow_models + 1, len(x)])
  for index, mask in enumerate(included):
    model = train_fn(x[mask], y[mask])
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    statistics[index] = advanced_mia.calculate_statistic(
        logits, y, is_logits=True, option="logit")
  shadow, target = statistics[:-1], statistics[-1]
  shadow_in = included[:-1]
  stat_in = [shadow[shadow_in[:, i], i][:, None] for i in range(len(x))]
  stat_out = [shadow[~shadow_in[:, i], i][:, None] for i in range(len(x))]
  # LiRA's score is small for members; negate so that larger means "in".
  scores = -advanced_mia.compute_score_lira(target[:, None], stat_in,
                                            stat_out, fix_variance=True)
  members = included[-1]
  fpr, tpr, _ = metrics.roc_curve(members, scores)
  low = np.searchsorted(fpr, 1e-3, side="right") - 1
  return LiraReport(float(metrics.roc_auc_score(members, scores)),
                    float(tpr[max(low, 0)]), shadow_models)
