"""Centred clipping (DOPE-SGD) in the fast engine against the oracle.

With a centre v, the engine must return ||g_i - v|| and
sum_i min(1, C/||g_i - v||) (g_i - v), with g_i from one example at a time
(and the mean over copies under augmentation multiplicity).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tests.clipping import test_augmult
from tfdp.clipping import fast
from tfdp.clipping.layers import _common

RTOL = 1e-5
LOSS = test_augmult.LOSS
# pylint: disable=protected-access
MODELS, DATA = test_augmult._MODELS, test_augmult._data
MLP, CONV_NET = test_augmult._mlp, test_augmult._conv_net
# pylint: enable=protected-access


def _center(model, seed, scale):
  rng = np.random.default_rng(seed)
  return [scale * rng.normal(size=v.shape).astype(np.float32)
          for v in model.trainable_variables]


@pytest.mark.parametrize("path", ["ghost", "explicit", "explicit-recomputed"])
@pytest.mark.parametrize("copies", [1, test_augmult.COPIES])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_centered_norms_and_sum_match_oracle(name, copies, path, monkeypatch):
  monkeypatch.setattr(_common, "prefer_ghost_norm",
                      lambda *a, **k: path == "ghost")
  monkeypatch.setattr(_common, "keep_per_example_gradients",
                      lambda *a: path == "explicit")
  tf.keras.utils.set_random_seed(11)
  make, kind = MODELS[name]
  model = make()
  x, y = DATA(model, kind, examples=5, seed=11)
  if copies == 1:
    x, y = x[::test_augmult.COPIES], y[::test_augmult.COPIES]
  per_example = oracle.mean_over_copies(
      oracle.per_example_gradients(model, x, y, LOSS), copies)
  # A centre of the gradients' own scale, so that it changes which
  # examples are clipped.
  scale = float(np.median(oracle.norms(per_example))) / np.sqrt(
      model.count_params())
  center = _center(model, 1, scale)
  expected = oracle.minus(per_example, center)
  expected_norms = oracle.norms(expected)
  clip = float(np.median(expected_norms))
  run = tf.function(lambda x, y: fast.clipped_gradients(
      model, x, y, LOSS, clip, copies_per_example=copies, center=center))
  result = run(x, y)
  oracle.assert_allclose_relative(result.norms, expected_norms, RTOL)
  oracle.assert_gradients_close(result.gradient_sum,
                                oracle.clipped_sum(expected, clip), RTOL)
  assert not np.allclose(expected_norms, oracle.norms(per_example), rtol=0.05)


def test_zero_center_is_plain_clipping():
  tf.keras.utils.set_random_seed(12)
  model = MLP()
  x, y = DATA(model, "float", examples=4, seed=12)
  plain = fast.clipped_gradients(model, x, y, LOSS, 0.3)
  centered = fast.clipped_gradients(
      model, x, y, LOSS, 0.3,
      center=[np.zeros(v.shape, np.float32)
              for v in model.trainable_variables])
  oracle.assert_allclose_relative(centered.norms, plain.norms, RTOL)
  oracle.assert_gradients_close(centered.gradient_sum, plain.gradient_sum,
                                RTOL)


def test_center_of_the_wrong_shape_is_refused():
  model = MLP()
  with pytest.raises(ValueError, match="center must hold one tensor per"):
    fast.clipped_gradients(model, np.zeros((2, 5), np.float32),
                           np.zeros(2, np.int64), LOSS, 1.0,
                           center=[np.zeros((5, 6), np.float32)])


@pytest.mark.parametrize("seed", range(5))
def test_a_term_near_the_center_is_never_longer_than_the_clip(seed):
  """g_i - v tiny against g_i: float32 cancellation must not lengthen it.

  One example, v = (1 - 1e-4) g_0 (so ||g_0 - v|| = 1e-4 ||g_0||) and a clip
  bound half that: the clipped sum is the one clipped term, of norm <= C.
  """
  tf.keras.utils.set_random_seed(seed)
  model = CONV_NET()
  x, y = DATA(model, "float", examples=1, seed=seed)
  (gradient,) = oracle.per_example_gradients(model, x[:1], y[:1], LOSS)
  center = [((1 - 1e-4) * g).astype(np.float32) for g in gradient]
  exact = oracle.norms(oracle.minus([gradient], center))[0]
  clip = 0.5 * exact
  result = fast.clipped_gradients(model, x[:1], y[:1], LOSS, clip,
                                  center=center)
  length = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                       for g in result.gradient_sum))
  assert length <= clip
