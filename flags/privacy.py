"""Privacy flags: clipping, noise, budget and accounting."""

from absl import flags

import flags as shared_flags

L2_NORM_CLIP = flags.DEFINE_float(
    "l2_norm_clip", 1.0, "Per-example gradient clipping norm C (> 0).")
NOISE_MULTIPLIER = flags.DEFINE_float(
    "noise_multiplier", None,
    "Noise multiplier sigma (>= 0). If unset, it is calibrated so that the "
    "planned epochs spend exactly --target_epsilon.")
TARGET_EPSILON = flags.DEFINE_float(
    "target_epsilon", 3.0, "Privacy budget epsilon (> 0); training stops "
    "before passing it.")
DELTA = flags.DEFINE_float("delta", 1e-5, "Privacy parameter delta (0, 1).")
ACCOUNTANT = flags.DEFINE_enum("accountant", "pld", ["pld", "rdp"],
                               "dp_accounting accountant.")
SAMPLING = flags.DEFINE_enum(
    "sampling", "poisson", ["poisson", "fixed_size"],
    "Batch sampler: Poisson (variable batch size) or fixed-size batches "
    "drawn without replacement; the accountant follows it.")
SAMPLING_SEED = flags.DEFINE_integer(
    "sampling_seed", None,
    "Seed of the batch sampler, for tests only: a known seed makes batch "
    "membership public, which the accountant's amplification by sampling "
    "assumes it is not. Default: the OS's entropy (the DP noise always is).",
    lower_bound=0)

shared_flags.check_range(L2_NORM_CLIP, above=0)
shared_flags.check_range(NOISE_MULTIPLIER, at_least=0)
shared_flags.check_range(TARGET_EPSILON, above=0)
shared_flags.check_range(DELTA, above=0, below=1)
