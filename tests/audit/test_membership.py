"""Membership inference through TF Privacy, on models that do and do not leak.

An MLP fitted for many epochs to 60 examples with random labels can only
memorise them: their losses are far below those of unseen examples, and the
attacks must see it. A model trained on neither set cannot tell them apart:
its AUC must be near 0.5 (its standard error for 60 + 60 examples is about
0.053; max over attacks biases it up a little).
"""

import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.audit import memorising
from tfdp.audit import membership

FEATURES, CLASSES = memorising.FEATURES, memorising.CLASSES
_examples, _train = memorising.examples, memorising.classifier
# TF Privacy's tools import on TensorFlow 2.15 only (README, "TensorFlow
# versions"); elsewhere the attacks must refuse, which the last test checks.
_MISSING = membership.missing_privacy_tests()
needs_privacy_tests = pytest.mark.skipif(_MISSING is not None,
                                         reason=str(_MISSING))


@needs_privacy_tests
def test_memorised_members_are_found():
  members, non_members = _examples(60, 0), _examples(60, 1)
  report = membership.membership_attack(_train(*members), members,
                                        non_members)
  assert report.auc > 0.85
  assert report.attacker_advantage > 0.5
  assert report.epsilon_lower_bound > 0.0
  assert any(name.startswith("THRESHOLD_ATTACK") for name in report.by_attack)


@needs_privacy_tests
def test_a_model_that_saw_neither_set_gives_chance():
  model = _train(*_examples(60, 2))
  report = membership.membership_attack(model, _examples(60, 0),
                                        _examples(60, 1))
  assert abs(report.auc - 0.5) < 0.2


def test_per_example_loss_matches_keras():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(7, CLASSES)) * 5
  labels = rng.integers(0, CLASSES, 7)
  expected = tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True).numpy()
  np.testing.assert_allclose(membership.per_example_loss(logits, labels),
                             expected, rtol=1e-5)


@needs_privacy_tests
def test_lira_finds_memorised_members():
  population = _examples(120, 4)
  report = membership.lira_attack(lambda x, y: _train(x, y, epochs=150),
                                  population, shadow_models=4, seed=0)
  assert report.shadow_models == 4
  assert report.auc > 0.8


@needs_privacy_tests
def test_bad_input_names_the_argument():
  with pytest.raises(ValueError, match="non_members"):
    membership.membership_attack(None, _examples(5, 0),
                                 (np.zeros([0, FEATURES]), np.zeros([0])))
  with pytest.raises(ValueError, match="attacks"):
    membership.membership_attack(_train(*_examples(5, 0), epochs=1),
                                 _examples(5, 0), _examples(5, 1),
                                 attacks=["NO_SUCH_ATTACK"])
  with pytest.raises(ValueError, match="shadow_models"):
    membership.lira_attack(_train, _examples(10, 0), shadow_models=1, seed=0)


def test_missing_privacy_tests_says_what_to_install(monkeypatch):
  # A None entry in sys.modules makes importing that module fail, as if the
  # package were not installed.
  monkeypatch.setitem(
      sys.modules, "tensorflow_privacy.privacy.privacy_tests."
      "membership_inference_attack.membership_inference_attack", None)
  with pytest.raises(ImportError,
                     match=r"pip install -e \"\.\[tf215,audit\]\""):
    membership.membership_attack(None, _examples(5, 0), _examples(5, 1))
