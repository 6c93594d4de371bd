"""DP-GAN flags (experiments/dp_gan.py): mode, models, steps, evaluation."""

from absl import flags

import flags as shared_flags

MODE = flags.DEFINE_enum(
    "mode", "gc", ["gc", "adaptive", "is", "none"],
    "How D's real-data gradient is protected: gc (per-example clipping to "
    "--l2_norm_clip plus Gaussian noise: DP-SGD), adaptive (per-layer clip "
    "bounds from mean samples, their cost added to epsilon), is (immediate "
    "sensitivity: no DP guarantee, needs --no_dp_guarantee) or none "
    "(non-private baseline: no DP guarantee, needs --no_dp_guarantee).")
NO_DP_GUARANTEE = flags.DEFINE_bool(
    "no_dp_guarantee", False,
    "Required for --mode=is and --mode=none, which give no DP guarantee: "
    "no epsilon is reported for them.")
GAN_LOSS = flags.DEFINE_enum(
    "gan_loss", "gan", ["gan", "wgan_gp"],
    "gan (non-saturating) or wgan_gp (Wasserstein loss, gradient penalty on "
    "mean samples, their cost added to epsilon).")
CONDITIONING = flags.DEFINE_enum(
    "conditioning", "acgan", ["none", "cgan", "acgan"],
    "Labels: none (unconditional; no downstream accuracy), cgan (D with a "
    "label projection head) or acgan (D with a class head).")
ARCHITECTURE = flags.DEFINE_enum(
    "architecture", "mlp", ["mlp", "conv"],
    "mlp (the ported vanilla GAN) or conv (DCGAN-style, GroupNorm in G).")
WIDTH = flags.DEFINE_integer(
    "width", 128, "Hidden units (mlp) or filters (conv) of D, and of G "
    "unless --generator_width is given.", lower_bound=2)
GENERATOR_WIDTH = flags.DEFINE_integer(
    "generator_width", None, "Hidden units (mlp) or filters (conv) of G "
    "(not private: its size costs no privacy). Default --width.",
    lower_bound=1)
LATENT_DIM = flags.DEFINE_integer("latent_dim", 100, "Size of G's latent z.",
                                  lower_bound=1)
STEPS = flags.DEFINE_integer(
    "steps", 2000, "Generator steps; each follows --d_steps D steps (the "
    "private steps the accountant counts).", lower_bound=1)
D_STEPS = flags.DEFINE_integer("d_steps", 1, "D steps per G step.",
                               lower_bound=1)
BETA_1 = flags.DEFINE_float("beta_1", 0.5, "Adam's beta_1, in [0, 1).")
MEAN_SAMPLES = flags.DEFINE_integer(
    "mean_samples", 32,
    "Mean samples released (used by --mode=adaptive and --gan_loss=wgan_gp "
    "only; their privacy cost is added).", lower_bound=1)
MEAN_SIZE = flags.DEFINE_integer(
    "mean_size", 5000, "Private images averaged per mean sample (at most the "
    "training set).", lower_bound=1)
MEAN_NOISE_STD = flags.DEFINE_float(
    "mean_noise_std", 0.22, "Gaussian noise std per pixel of a mean sample.")
ADAPTIVE_SCALAR = flags.DEFINE_float(
    "adaptive_scalar", 1.5,
    "--mode=adaptive: each layer's clip bound is this times its mean "
    "per-example gradient norm on the mean samples.")
CLIP_FAKE = flags.DEFINE_bool(
    "clip_fake", True,
    "Also clip the per-example gradients of D's fake pass (no noise: no "
    "private image enters it), keeping it on the scale of the clipped real "
    "pass. For balance, not privacy; docs/dp_gan.md has the ablation.")
GP_WEIGHT = flags.DEFINE_float("gp_weight", 10.0,
                               "Weight of WGAN-GP's gradient penalty.")
DOWNSTREAM_SAMPLES = flags.DEFINE_integer(
    "downstream_samples", 10000,
    "Generated labelled samples the downstream classifier trains on.",
    lower_bound=1)
DOWNSTREAM_EPOCHS = flags.DEFINE_integer(
    "downstream_epochs", 10, "Epochs of the downstream classifier.",
    lower_bound=1)
LOGAN_CANDIDATES = flags.DEFINE_integer(
    "logan_candidates", 1000,
    "LOGAN: candidates per repeat (10% training members, the rest held-out "
    "images).", lower_bound=10)
LOGAN_REPEATS = flags.DEFINE_integer("logan_repeats", 10,
                                     "LOGAN: candidate sets drawn.",
                                     lower_bound=1)
LOG_EVERY = flags.DEFINE_integer(
    "log_every", 100, "Steps between progress lines and TensorBoard scalars "
    "(losses, epsilon) and checkpoints.", lower_bound=1)
GRID_EVERY = flags.DEFINE_integer(
    "grid_every", 500, "Steps between sample grids in TensorBoard.",
    lower_bound=1)
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None,
    "Where results.json, results.md and samples.png go; default the run's "
    "directory under --output_dir.")

shared_flags.check_range(BETA_1, at_least=0, below=1)
shared_flags.check_range(MEAN_NOISE_STD, above=0)
shared_flags.check_range(ADAPTIVE_SCALAR, above=0)
shared_flags.check_range(GP_WEIGHT, at_least=0)
