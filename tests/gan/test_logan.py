"""tfdp.gan.success_rate: LOGAN's white-box membership attack.

Chance is hypergeometric: with 1,000 candidates, 100 members and the top
100 counted, the member count has standard deviation 2.85, so the mean
success of 20 independent repeats has 0.0064 (`LoganResult.chance_std`);
a membership-blind score falls outside 5 of those with probability
< 1e-6.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfdp import data
from tfdp import gan


def _digits_pools():
  """Members (100), non-members (900), and 797 other real digits."""
  ds = data.load_digits()
  x = np.concatenate([ds.train.x, ds.test.x]).reshape(-1, 64)
  perm = np.random.default_rng(0).permutation(len(x))
  return x[perm[:100]], x[perm[100:1000]], x[perm[1000:]]


def test_a_memorising_score_finds_every_member():
  members, non_members, _ = _digits_pools()
  score = lambda b: -np.min(
      np.linalg.norm(b[:, None] - members[None], axis=-1), axis=1)
  result = gan.success_rate(score, members, non_members, repeats=3)
  assert result.members_in_top == [100, 100, 100]
  assert result.mean == 1.0


def test_a_constant_score_scores_chance():
  # Random tie-breaking: ranked in input order, the members (first) would
  # all reach the top. Fresh tie-breaks make the 20 repeats independent.
  members, non_members, _ = _digits_pools()
  result = gan.success_rate(lambda b: np.zeros(len(b)), members,
                            non_members, repeats=20)
  assert result.chance == 0.1
  assert abs(result.mean - 0.1) < 5 * result.chance_std, result.rates


def test_a_random_score_scores_chance():
  # A fresh random score per call: 20 independent one-repeat attacks.
  members, non_members, _ = _digits_pools()
  rng = np.random.default_rng(1)
  results = [gan.success_rate(lambda b: rng.normal(size=len(b)), members,
                              non_members, repeats=1, seed=seed)
             for seed in range(20)]
  mean = np.mean([r.mean for r in results])
  assert abs(mean - 0.1) < 5 * results[0].chance_std / np.sqrt(20), mean


def test_a_tiny_memorising_discriminator_scores_well_above_chance():
  # D learns "real" = the 100 members against fakes from a perfect
  # generator (real digits that are neither members nor candidates): it can
  # only tell them apart by memorising its members.
  members, non_members, fake = _digits_pools()
  tf.keras.utils.set_random_seed(0)
  discriminator = tf.keras.Sequential([
      tf.keras.layers.Dense(256, activation="relu", input_shape=(64,)),
      tf.keras.layers.Dense(1)])
  discriminator.compile(tf.keras.optimizers.Adam(1e-3),
                        tf.keras.losses.BinaryCrossentropy(from_logits=True))
  x = np.concatenate([np.repeat(members, 8, 0), fake]).astype(np.float32)
  y = np.concatenate([np.ones(800), np.zeros(len(fake))])
  discriminator.fit(x, y, epochs=60, batch_size=128, verbose=0)
  result = gan.success_rate(
      lambda b: discriminator(b.astype(np.float32)).numpy(), members,
      non_members, repeats=20)
  # Measured 0.67; chance 0.1 +- 0.0064.
  assert result.mean > 0.3, result.rates


def test_bad_arguments_name_themselves():
  members, non_members, _ = _digits_pools()
  score = lambda b: np.zeros(len(b))
  with pytest.raises(ValueError, match="members must hold at least 200"):
    gan.success_rate(score, members, non_members, member_fraction=0.2)
  with pytest.raises(ValueError, match="non_members must hold at least"):
    gan.success_rate(score, members, non_members[:10])
  with pytest.raises(ValueError, match="member_fraction"):
    gan.success_rate(score, members, non_members, member_fraction=1.5)
  with pytest.raises(ValueError, match="top_k"):
    gan.success_rate(score, members, non_members, top_k=2000)
  with pytest.raises(ValueError, match="one score per image"):
    gan.success_rate(lambda b: np.zeros((len(b), 2)), members, non_members)
