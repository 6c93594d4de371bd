"""Flags of experiments.securesgd_tinyimagenet (its own ones).

The data, training-length, evaluation and output flags are shared with the
StoBatch experiments (flags/stobatch.py); the DP-SGD ones come from
flags/privacy.py.
"""

import math

from absl import flags

import flags as shared_flags

EPSILON_HGM = flags.DEFINE_float(
    "epsilon_hgm", 1.0,
    "Epsilon of the Heterogeneous Gaussian Mechanism on the first hidden "
    "layer (with respect to input changes up to --hgm_attack_size).")
DELTA_HGM = flags.DEFINE_float(
    "delta_hgm", 1e-5, "Delta of the HGM, in (0, sqrt(2/pi)).")
HGM_ATTACK_SIZE = flags.DEFINE_float(
    "hgm_attack_size", 0.1,
    "L: the input change (in --eval_norm, pixels in [-1, 1]) the HGM's "
    "epsilon and delta are calibrated for.")
FIRST_LAYER_SENSITIVITY = flags.DEFINE_float(
    "first_layer_sensitivity", 1.0,
    "Bound kept on the first conv's L2 sensitivity per unit attack (a "
    "kernel constraint); the HGM noise scales with it.")

shared_flags.check_range(EPSILON_HGM, above=0)
shared_flags.check_range(DELTA_HGM, above=0, below=math.sqrt(2 / math.pi))
shared_flags.check_range(HGM_ATTACK_SIZE, above=0)
shared_flags.check_range(FIRST_LAYER_SENSITIVITY, above=0)
