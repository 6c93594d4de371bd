"""Model-inversion flags (experiments/model_inversion.py): target, public
set, the attacker's GAN, reconstruction, evaluation."""

from absl import flags

import flags as shared_flags

TARGETS = ("nonprivate", "dp", "public_bn")

TARGET = flags.DEFINE_enum(
    "target", "nonprivate", list(TARGETS),
    "The attacked classifier (LeNet-5 in every case): nonprivate (Adam, no "
    "clipping or noise), dp (DP-SGD through tfdp.make_private, calibrated to "
    "--target_epsilon over --epochs) or public_bn (the same DP-SGD with "
    "public-batch normalisation, statistics from --public_bn_examples "
    "training images treated as public).")
PUBLIC = flags.DEFINE_enum(
    "public", "auto", ["auto", "digits", "held_out"],
    "The attacker's unlabelled public images: digits (scikit-learn's 8x8 "
    "digits fitted to 20x20 in a 28x28 frame: another distribution; 28x28 "
    "data only), held_out (the held-out test split, labels removed) or auto "
    "(digits for 28x28 one-channel data, else held_out).")
TOP_N = flags.DEFINE_integer(
    "top_n", 100, "Public images kept per class by the target's softmax "
    "(30 in the paper, with 1,000 classes); at most the public set's size.",
    lower_bound=1)
GAN_STEPS = flags.DEFINE_integer(
    "inversion_gan_steps", 1500, "Generator steps of the attacker's GAN.",
    lower_bound=1)
D_STEPS = flags.DEFINE_integer(
    "inversion_d_steps", 5, "Discriminator steps per generator step.",
    lower_bound=1)
GAN_BATCH_SIZE = flags.DEFINE_integer(
    "inversion_batch_size", 64, "Batch of the attacker's GAN.", lower_bound=1)
GAN_WIDTH = flags.DEFINE_integer(
    "inversion_gan_width", 16, "Filters of the GAN's last G block and first "
    "D block (the others have twice as many).", lower_bound=1)
INVERSION_WEIGHT = flags.DEFINE_float(
    "inversion_weight", 0.2, "Weight of the target's margin loss in G's "
    "loss; 0 trains a plain conditional GAN.")
RECONSTRUCTION_STEPS = flags.DEFINE_integer(
    "reconstruction_steps", 600, "Adam steps on the latent codes.",
    lower_bound=1)
RECONSTRUCTION_LEARNING_RATE = flags.DEFINE_float(
    "reconstruction_learning_rate", 0.1, "Adam's learning rate on the "
    "latent codes.")
RECONSTRUCTIONS_PER_CLASS = flags.DEFINE_integer(
    "reconstructions_per_class", 10, "Latent codes optimised per class.",
    lower_bound=1)
EVALUATION_EPOCHS = flags.DEFINE_integer(
    "evaluation_epochs", 10, "Epochs of the evaluation classifier (another "
    "architecture, trained on the private training split).", lower_bound=1)
PUBLIC_BN_EXAMPLES = flags.DEFINE_integer(
    "public_bn_examples", 128, "--target=public_bn: training images set "
    "aside as the public normalisation batch (not in the private set).",
    lower_bound=2)
GAN_LOG_EVERY = flags.DEFINE_integer(
    "inversion_log_every", 100, "GAN steps between progress lines and "
    "TensorBoard scalars.", lower_bound=1)

shared_flags.check_range(INVERSION_WEIGHT, at_least=0)
shared_flags.check_range(RECONSTRUCTION_LEARNING_RATE, above=0)
