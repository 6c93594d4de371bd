"""Flags of experiments/dp_public_data.py: the ablation's rows and settings."""

from absl import flags

import flags as shared_flags

ROWS = flags.DEFINE_list(
    "rows", None,
    "Ablation rows to run, from those listed in experiments/dp_public_data.py "
    "(default: all of them).")
EPSILONS = flags.DEFINE_list("epsilons", ["1", "2", "4"],
                             "Target epsilons (at --delta), each > 0.")
SEEDS = flags.DEFINE_integer(
    "seeds", 3, "Runs per (row, epsilon), with seeds --seed, --seed + 1, ...",
    lower_bound=1)
MODEL = flags.DEFINE_enum(
    "model", "papernot_cnn", ["papernot_cnn", "wrn16_4"],
    "papernot_cnn (tanh CNN at --width; MNIST-sized) or wrn16_4 (WRN-16-4 "
    "with weight standardisation and GroupNorm(16); CIFAR-10).")
WIDTH = flags.DEFINE_float("width", 0.25,
                           "Width multiplier of papernot_cnn (> 0).")
PUBLIC_EXAMPLES = flags.DEFINE_integer(
    "public_examples", 320, "Public examples taken out of the training split "
    "(stratified, fixed by --split_seed); the rest is private.",
    lower_bound=1)
SYNTHETIC_SIZE = flags.DEFINE_integer(
    "synthetic_size", 10000, "Labelled images generated for the synthetic "
    "warm-up.", lower_bound=1)
SYNTHETIC_NPZ = flags.DEFINE_string(
    "synthetic_npz", None, "Read the synthetic warm-up images from this .npz "
    "(x, y; e.g. a diffusion model's samples) instead of training a GAN on "
    "the public slice.")
GAN_STEPS = flags.DEFINE_integer(
    "gan_steps", 3000, "Steps of the non-private conditional GAN trained on "
    "the public slice for the synthetic warm-up.", lower_bound=1)
WARMUP_EPOCHS = flags.DEFINE_integer(
    "warmup_epochs", 20, "Epochs of non-private warm-up (SGD, momentum 0.9) "
    "over the warm-up data.", lower_bound=1)
WARMUP_LEARNING_RATE = flags.DEFINE_float(
    "warmup_learning_rate", 0.05, "Learning rate of the warm-up (> 0).")
WARMUP_BATCH_SIZE = flags.DEFINE_integer(
    "warmup_batch_size", 64, "Batch size of the warm-up.", lower_bound=1)
AUGMENT_PADDING = flags.DEFINE_integer(
    "augment_padding", 2, "Augmentation multiplicity's random shift, in "
    "pixels (4 for CIFAR-10).", lower_bound=0)
AUGMENT_FLIP = flags.DEFINE_bool(
    "augment_flip", False, "Also flip the copies left-right (CIFAR-10; not "
    "digits).")
PUBLIC_BATCH_SIZE = flags.DEFINE_integer(
    "public_batch_size", 64, "Public examples per step for DOPE-SGD and "
    "Mirror-GD.", lower_bound=1)
MIRROR_WEIGHT = flags.DEFINE_float(
    "mirror_weight", 0.5, "Mirror-GD's beta, the weight of the noisy private "
    "gradient, in (0, 1].")
EMA_MOMENTUM = flags.DEFINE_float(
    "ema_momentum", 0.99, "Parameter EMA momentum for the EMA rows, in "
    "(0, 1) (0.999 for runs of thousands of steps).")

shared_flags.check_range(WIDTH, above=0)
shared_flags.check_range(WARMUP_LEARNING_RATE, above=0)
shared_flags.check_range(MIRROR_WEIGHT, above=0, at_most=1)
shared_flags.check_range(EMA_MOMENTUM, above=0, below=1)
shared_flags.check_range(EPSILONS, above=0)
