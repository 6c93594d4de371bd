"""Mixed ghost clipping's choice between the ghost norm and explicit gradients.

Costs per example: ghost T^2 (D + p) arithmetic and 2 T^2 Gram entries;
explicit T D p arithmetic and D p gradient entries.
"""

from tfdp.clipping.layers import _common


def test_cheaper_arithmetic_wins_within_the_memory_limit():
  # T = 64, D = 1152, p = 128 (papernot's last conv): ghost 64^2 * 1280 =
  # 5.2M < explicit 64 * 1152 * 128 = 9.4M.
  assert _common.prefer_ghost_norm(64, 1152, 128)
  # T = 1024 (a 32x32 map), D = 27, p = 32: explicit 0.9M < ghost 61M.
  assert not _common.prefer_ghost_norm(1024, 27, 32)


def test_large_explicit_gradients_fall_back_to_the_ghost_norm():
  # T = 2100, D = p = 4096: explicit 35.2G < ghost 36.1G operations, but
  # 4 B * 128 * 16.8M = 8.6 GB of gradients, more than the limit and more
  # than the 2 * 2100^2 = 8.8M Gram entries of the ghost norm.
  assert _common.prefer_ghost_norm(2100, 4096, 4096)


def test_many_positions_keep_explicit_gradients_past_the_limit():
  # WRN-16-4's last convolutions with 16 augmented copies: T = 16 * 64,
  # D = 2304, p = 256. Explicit 0.60G < ghost 2.7G operations; its 590K
  # gradient entries (302 MB for 128 examples, over the limit) are still
  # fewer than the ghost norm's 2 * 1024^2 = 2.1M Gram entries.
  assert 4 * 128 * 2304 * 256 > _common.EXPLICIT_MEMORY_LIMIT_BYTES
  assert not _common.prefer_ghost_norm(16 * 64, 2304, 256)
  # The same layer at K = 1 (T = 64) prefers the ghost norm by arithmetic.
  assert _common.prefer_ghost_norm(64, 2304, 256)
