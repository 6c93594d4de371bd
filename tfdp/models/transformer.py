"""Small transformers for DP training: a ViT and a text classifier.

Both are pre-norm encoders (Vaswani et al., 2017; Dosovitskiy et al., 2021):
each block is x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU MLP. Every
layer has a clipping rule in tfdp's fast engine (Conv2D, PositionEmbedding,
LayerNormalization, EinsumDense inside MultiHeadAttention, Dense,
Embedding), so none falls back to exact per-example gradients; there is no
BatchNormalization, whose batch statistics would break per-example
clipping.
"""

from typing import Optional, Tuple

import tensorflow as tf

from tfdp import _validation
from tfdp.layers import position_embedding


def _encoder_block(x: tf.Tensor, width: int, num_heads: int, mlp_width: int,
                   name: str) -> tf.Tensor:
  """x + MHA(LN(x)), then x + MLP(LN(x)); masks flow through."""
  normed = tf.keras.layers.LayerNormalization(epsilon=1e-6,
                                              name=f"{name}_ln1")(x)
  attended = tf.keras.layers.MultiHeadAttention(
      num_heads=num_heads, key_dim=width // num_heads,
      name=f"{name}_attention")(normed, normed)
  x = tf.keras.layers.Add(name=f"{name}_add1")([x, attended])
  normed = tf.keras.layers.LayerNormalization(epsilon=1e-6,
                                              name=f"{name}_ln2")(x)
  hidden = tf.keras.layers.Dense(mlp_width, activation="gelu",
                                 name=f"{name}_mlp1")(normed)
  hidden = tf.keras.layers.Dense(width, name=f"{name}_mlp2")(hidden)
  return tf.keras.layers.Add(name=f"{name}_add2")([x, hidden])


def _check_sizes(width: int, depth: int, num_heads: int,
                 mlp_ratio: int) -> None:
  _validation.check_positive_int("width", width)
  _validation.check_positive_int("depth", depth)
  _validation.check_positive_int("num_heads", num_heads)
  _validation.check_positive_int("mlp_ratio", mlp_ratio)
  if width % num_heads:
    raise ValueError(f"width must be a multiple of num_heads, got width="
                     f"{width} and num_heads={num_heads}")


def _encoder(x: tf.Tensor, num_classes: int, width: int, depth: int,
             num_heads: int, mlp_ratio: int) -> tf.Tensor:
  """Position embedding, `depth` blocks, LN, average over positions, head."""
  x = position_embedding.PositionEmbedding(name="positions")(x)
  for index in range(depth):
    x = _encoder_block(x, width, num_heads, mlp_ratio * width,
                       f"block{index + 1}")
  x = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
  x = tf.keras.layers.GlobalAveragePooling1D(name="pool")(x)
  return tf.keras.layers.Dense(num_classes, name="head")(x)


def vit(input_shape: Tuple[int, int, int], num_classes: int, *,
        patch_size: int = 4, width: int = 64, depth: int = 4,
        num_heads: int = 4, mlp_ratio: int = 2) -> tf.keras.Model:
  """A small Vision Transformer classifier (logits).

  Patches of `patch_size` x `patch_size` are embedded by a Conv2D with that
  kernel and stride, given learned position embeddings, passed through
  `depth` pre-norm encoder blocks and averaged (no class token).

  Args:
    input_shape: (H, W, C), H and W multiples of `patch_size`.
    num_classes: logits.
    patch_size: the patch side, >= 1.
    width: the embedding width, a multiple of `num_heads`.
    depth: encoder blocks.
    num_heads: attention heads.
    mlp_ratio: the MLP's hidden width over `width`.

  Example:
    >>> model = vit((28, 28, 1), num_classes=10, width=16, depth=1)
    >>> model(tf.zeros([2, 28, 28, 1])).shape
    TensorShape([2, 10])
  """
  _validation.check_positive_int("num_classes", num_classes)
  _validation.check_positive_int("patch_size", patch_size)
  _check_sizes(width, depth, num_heads, mlp_ratio)
  height, side, _ = input_shape
  if height % patch_size or side % patch_size:
    raise ValueError(f"input_shape {input_shape}: H and W must be multiples "
                     f"of patch_size ({patch_size})")
  images = tf.keras.Input(input_shape)
  patches = tf.keras.layers.Conv2D(width, patch_size, strides=patch_size,
                                   name="patch_embedding")(images)
  tokens = tf.keras.layers.Reshape((-1, width), name="tokens")(patches)
  return tf.keras.Model(
      images, _encoder(tokens, num_classes, width, depth, num_heads,
                       mlp_ratio), name="vit")


def text_transformer(vocab_size: int, num_classes: int, *,
                     sequence_length: int = 128, width: int = 64,
                     depth: int = 2, num_heads: int = 4, mlp_ratio: int = 2,
                     padding_id: Optional[int] = 0) -> tf.keras.Model:
  """A small text classifier: token embedding and a transformer encoder.

  Token `padding_id` (None: no padding) is masked: attention ignores padded
  keys and the average over positions skips them.

  Args:
    vocab_size: token ids in [0, vocab_size).
    num_classes: logits.
    sequence_length: tokens per example.
    width, depth, num_heads, mlp_ratio: as in `vit`.
    padding_id: 0 or None.

  Example:
    >>> model = text_transformer(100, 2, sequence_length=16, width=16)
    >>> model(tf.ones([2, 16], tf.int32)).shape
    TensorShape([2, 2])
  """
  _validation.check_positive_int("vocab_size", vocab_size)
  _validation.check_positive_int("num_classes", num_classes)
  _validation.check_positive_int("sequence_length", sequence_length)
  _check_sizes(width, depth, num_heads, mlp_ratio)
  if padding_id not in (0, None):
    raise ValueError(f"padding_id must be 0 or None, got {padding_id!r}")
  tokens = tf.keras.Input((sequence_length,), dtype=tf.int32)
  embedded = tf.keras.layers.Embedding(
      vocab_size, width, mask_zero=padding_id == 0,
      name="token_embedding")(tokens)
  return tf.keras.Model(
      tokens, _encoder(embedded, num_classes, width, depth, num_heads,
                       mlp_ratio), name="text_transformer")
