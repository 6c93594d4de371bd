"""Flags of experiments/audit.py: what is audited, how, and how hard."""

from absl import flags

import flags as shared_flags

TRAINER = flags.DEFINE_enum(
    "trainer", "dpsgd", ["dpsgd", "dpsgd_public_bn", "dp_gan", "stobatch"],
    "The trainer audited: dpsgd (tfdp.make_private + DPSGD, Poisson "
    "sampling, an MLP), dpsgd_public_bn (the same with LeNet-5 whose "
    "BatchNorm statistics come from a public batch) or dp_gan (tfdp.gan's "
    "MLP DP-GAN, black-box only: held-out images as canaries, scored by the "
    "discriminator) or stobatch (tfdp.stobatch's MNIST network on one "
    "replica, black-box only: mislabeled canaries; its epsilon splits "
    "equally between the auto-encoder and the output layer).")
STOBATCH_STEPS = flags.DEFINE_integer(
    "stobatch_audit_steps", 30, "stobatch: training steps of the audited "
    "run (its epsilon does not depend on them).", lower_bound=1)
GAN_STEPS = flags.DEFINE_integer(
    "gan_audit_steps", 1000, "dp_gan: generator steps (one private "
    "discriminator step each) of the audited run.", lower_bound=1)
MODE = flags.DEFINE_enum(
    "mode", "whitebox", ["whitebox", "blackbox", "both"],
    "whitebox: Dirac gradient canaries, every iterate seen; blackbox: "
    "mislabeled input canaries, only the final model seen.")
CLAIMED_EPSILONS = flags.DEFINE_list(
    "claimed_epsilons", ["1", "4", "10"],
    "The epsilons (at --delta) the audited runs are calibrated to claim.")
AUDIT_SAMPLING_PROBABILITY = flags.DEFINE_float(
    "audit_sampling_probability", 0.5,
    "White-box: Poisson sampling probability q of the audited runs (their "
    "expected batch size is q times the examples).")
AUDIT_STEPS = flags.DEFINE_integer(
    "audit_steps", 8, "White-box: DP-SGD steps of one audited run.",
    lower_bound=1)
AUDIT_LEARNING_RATE = flags.DEFINE_float(
    "audit_learning_rate", 0.5, "SGD learning rate of the audited runs.")
RUNS_PER_SIDE = flags.DEFINE_integer(
    "runs_per_side", 500,
    "White-box many-runs audit: runs with the canary in, and as many with "
    "it out.", lower_bound=2)
CANARIES = flags.DEFINE_integer(
    "canaries", 1000, "Canaries of a one-run audit (each in with "
    "probability 1/2).", lower_bound=2)
BLACKBOX_CANARIES = flags.DEFINE_integer(
    "blackbox_canaries", 200,
    "Black-box: mislabeled canaries drawn from the test split (each in "
    "with probability 1/2).", lower_bound=2)
NEGATIVE_CONTROLS = flags.DEFINE_list(
    "negative_controls", ["no_noise", "no_clipping", "replica_noise"],
    "Broken trainers to audit at --control_epsilon (white-box, many runs); "
    "each must score above it: no_noise, no_clipping, replica_noise (every "
    "one of 2 replicas adds the average's noise, sigma C / B, to its sum).")
CONTROL_EPSILON = flags.DEFINE_float(
    "control_epsilon", 4.0, "The epsilon the negative controls claim.")
CONFIDENCE = flags.DEFINE_float(
    "confidence", 0.95, "Confidence of every lower bound, in (0, 1).")
MEMBERSHIP = flags.DEFINE_bool(
    "membership", True, "Also attack a non-private and the DP models with "
    "TF Privacy's membership inference and LiRA.")
LIRA_SHADOWS = flags.DEFINE_integer(
    "lira_shadows", 8, "Shadow models of LiRA (0: skip LiRA).", lower_bound=0)
NONPRIVATE_EPOCHS = flags.DEFINE_integer(
    "nonprivate_epochs", 200, "Epochs of the non-private (overfitted) model "
    "the membership attacks are compared on.", lower_bound=1)

shared_flags.check_range(CLAIMED_EPSILONS, above=0)
shared_flags.check_range(AUDIT_SAMPLING_PROBABILITY, above=0, at_most=1)
shared_flags.check_range(AUDIT_LEARNING_RATE, above=0)
shared_flags.check_range(CONTROL_EPSILON, above=0)
shared_flags.check_range(CONFIDENCE, above=0, below=1)
