"""The black-box one-run audit: power on a memorising trainer, none without."""

import numpy as np
import pytest

from tests.audit import memorising
from tfdp.audit import blackbox
from tfdp.audit import canaries

FEATURES, CLASSES = memorising.FEATURES, memorising.CLASSES
_examples = memorising.examples


def _memorise(x, y):
  return memorising.classifier(x, y, width=128)


def _canaries():
  return canaries.mislabeled_canaries(*_examples(200, 1), 200,
                                      num_classes=CLASSES, seed=0)


def test_memorised_canaries_give_a_bound():
  result = blackbox.one_run_audit(_memorise, *_examples(50, 0), *_canaries(),
                                  delta=1e-5, seed=0)
  assert result.included.sum() + (~result.included).sum() == 200
  # An included mislabeled canary is fitted; an excluded one is not.
  assert result.bound.epsilon > 1.5, result.bound


def test_a_release_that_ignores_the_data_gives_nothing():
  fixed = _memorise(*_examples(50, 2))
  result = blackbox.one_run_audit(lambda x, y: fixed, *_examples(50, 0),
                                  *_canaries(), delta=1e-5, seed=0)
  assert result.bound.epsilon < 0.5, result.bound


def test_custom_scores_and_bad_canaries():
  seen = {}

  def score_fn(released, x, y):
    seen["released"] = released
    return np.zeros(len(x))

  blackbox.one_run_audit(lambda x, y: "released", *_examples(10, 0),
                         *_canaries(), delta=1e-5, seed=0, score_fn=score_fn)
  assert seen["released"] == "released"
  with pytest.raises(ValueError, match="canary_x"):
    blackbox.one_run_audit(lambda x, y: None, *_examples(10, 0),
                           np.zeros([1, FEATURES]), np.zeros([1]),
                           delta=1e-5)
