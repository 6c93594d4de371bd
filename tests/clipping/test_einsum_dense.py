"""EinsumDense and MultiHeadAttention in the fast engine, against the oracle.

Several equations (Dense-like, with an ellipsis, MultiHeadAttention's
projections, an output whose positions follow the produced axes, biases
over some axes), both norm strategies, attention masks, and a transformer
encoder block; none of them may fall back to the exact per-layer path.
"""

import logging

import numpy as np
import pytest
import tensorflow as tf

from tests import oracle
from tfdp.clipping import fast
from tfdp.clipping.layers import _common

RTOL = 1e-5
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")

# (equation, input shape without the batch, output shape, bias axes).
EQUATIONS = [
    ("ab,bc->ac", (5,), (4,), "c"),
    ("abc,cd->abd", (3, 5), (3, 4), "d"),
    ("...b,bc->...c", (2, 3, 5), (4,), "c"),
    ("abc,cde->abde", (3, 5), (3, 2, 4), "de"),  # query / key / value
    ("abcd,cde->abe", (3, 2, 4), (3, 5), "e"),  # attention output
    ("abc,cd->adb", (3, 5), (4, 3), "d"),  # bias over [4, 1]
    ("abc,cd->abd", (3, 5), (3, 4), None),
]


def _check(model, x, y):
  expected = oracle.per_example_gradients(model, x, y, LOSS)
  expected_norms = oracle.norms(expected)
  clip = float(np.median(expected_norms))
  result = tf.function(lambda: fast.clipped_gradients(model, x, y, LOSS,
                                                      clip))()
  oracle.assert_allclose_relative(result.norms, expected_norms, RTOL)
  oracle.assert_gradients_close(result.gradient_sum,
                                oracle.clipped_sum(expected, clip), RTOL)


@pytest.fixture
def no_fallback(caplog):
  """Fails the test if any layer used the exact per-layer fall-back."""
  fast._WARNED_FALLBACK.clear()  # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING):
    yield
  assert not [r for r in caplog.get_records("call")
              if "no clipping rule" in r.getMessage()]


@pytest.mark.parametrize("ghost", [True, False])
@pytest.mark.parametrize("equation,input_shape,output_shape,bias_axes",
                         EQUATIONS, ids=[e[0] + str(e[3]) for e in EQUATIONS])
def test_equations_match_the_oracle(equation, input_shape, output_shape,
                                    bias_axes, ghost, monkeypatch,
                                    no_fallback):
  monkeypatch.setattr(_common, "prefer_ghost_norm", lambda *a, **k: ghost)
  tf.keras.utils.set_random_seed(len(equation))
  model = tf.keras.Sequential([
      tf.keras.Input(input_shape),
      tf.keras.layers.EinsumDense(equation, output_shape, bias_axes=bias_axes,
                                  activation="tanh",
                                  bias_initializer="random_normal"),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3),
  ])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6,) + input_shape).astype(np.float32)
  _check(model, x, rng.integers(0, 3, 6))


def test_equations_it_does_not_describe_fall_back():
  described = fast.registry.rule_for
  layer = tf.keras.layers.EinsumDense("abc,c->abc", (3, 5))  # c in all three
  layer.build((None, 3, 5))
  assert described(layer) is None
  dense_like = tf.keras.layers.EinsumDense("abc,cd->abd", (3, 4))
  dense_like.build((None, 3, 5))
  assert described(dense_like) is not None


def _attention_classifier(use_causal_mask: bool) -> tf.keras.Model:
  ids = tf.keras.Input((6,), dtype=tf.int32)
  # mask_zero: token 0 is padding; MultiHeadAttention masks those keys.
  x = tf.keras.layers.Embedding(7, 8, mask_zero=True)(ids)
  x = tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(
      x, x, use_causal_mask=use_causal_mask)
  x = tf.keras.layers.GlobalAveragePooling1D()(x)
  return tf.keras.Model(ids, tf.keras.layers.Dense(3)(x))


@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_multi_head_attention_with_padding_and_causal_masks(use_causal_mask,
                                                            no_fallback):
  tf.keras.utils.set_random_seed(3)
  model = _attention_classifier(use_causal_mask)
  rng = np.random.default_rng(3)
  ids = rng.integers(1, 7, (6, 6))
  ids[:, 4:] = 0  # padded tail
  ids[0, 2:] = 0
  _check(model, ids, rng.integers(0, 3, 6))


def test_transformer_encoder_block(no_fallback):
  tf.keras.utils.set_random_seed(4)
  inputs = tf.keras.Input((5, 8))
  x = tf.keras.layers.LayerNormalization()(inputs)
  x = inputs + tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
  y = tf.keras.layers.LayerNormalization()(x)
  y = tf.keras.layers.Dense(16, activation="gelu")(y)
  x = x + tf.keras.layers.Dense(8)(y)
  x = tf.keras.layers.GlobalAveragePooling1D()(x)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))
  rng = np.random.default_rng(4)
  _check(model, rng.normal(size=(6, 5, 8)).astype(np.float32),
         rng.integers(0, 3, 6))
