"""Flags of the StoBatch experiments.

stobatch_mnist, stobatch_cifar10, stobatch_tinyimagenet; securesgd_tinyimagenet
shares the data, evaluation and output flags.
"""

from absl import flags

import flags as shared_flags

GPUS = flags.DEFINE_integer(
    "gpus", 1,
    "Replicas N (synchronous data parallel, one fixed batch each per step). "
    "With fewer GPUs than N the run stops unless --allow_cpu_replicas.",
    lower_bound=1)
ALLOW_CPU_REPLICAS = flags.DEFINE_bool(
    "allow_cpu_replicas", False,
    "With fewer GPUs than --gpus, split the CPU into --gpus logical devices "
    "and run the same N-replica code path there (slow; for tests).")
DATASET = flags.DEFINE_string(
    "dataset", None,
    "digits (scikit-learn's, embedded), mnist or cifar10 (TFDS, prepared in "
    "--data_dir, never downloaded), tinyimagenet (the raw tiny-imagenet-200 "
    "folder given by --data_dir), or the path of an .npz file with x and "
    "y. Default: the experiment's own dataset.")
DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "TFDS data directory for mnist / cifar10; the tiny-imagenet-200 folder "
    "for tinyimagenet.")
NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", 30,
    "tinyimagenet: keep the first this many classes of wnids.txt (30 in "
    "StoBatch).", lower_bound=2)
MAX_PER_CLASS = flags.DEFINE_integer(
    "max_per_class", None,
    "tinyimagenet: at most this many images per class and split (quick "
    "runs); default all.", lower_bound=1)
INPUT_SIDE = flags.DEFINE_integer(
    "input_side", None,
    "Input side of the architecture (images are resized to it); default the "
    "architecture's (28 mnist / cifar10, 64 tinyimagenet). Smaller values "
    "are for quick runs. StoBatch experiments on digits: 8.",
    lower_bound=1)
WEIGHTS_PATH = flags.DEFINE_string(
    "weights_path", None,
    "tinyimagenet: local weights file of a keras-cv ResNet-18 "
    "ResNetBackbone (e.g. ImageNet weights) for the ResNet body, saved with "
    "save_weights (.h5 or a TF checkpoint prefix); never downloaded.")
TEST_FRACTION = flags.DEFINE_float(
    "test_fraction", 0.2,
    "Test fraction, in (0, 1), for digits and .npz files (fixed split by "
    "--data_seed).")
DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Seed of the split.",
                                 lower_bound=0)
MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "test"],
    "train: train (resuming from --checkpoint_dir), then evaluate; test: "
    "restore the latest checkpoint and evaluate (attacks, certification).")
STEPS = flags.DEFINE_integer(
    "steps", 500, "Total training steps (StoBatch experiments on digits: 30).",
    lower_bound=0)
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 128,
    "m: examples per fixed batch, one batch per replica per step (and one "
    "more for adversarial examples); the noise scales use m. StoBatch "
    "experiments on digits: the largest m with 2 batches per replica, "
    "n // (2 N).",
    lower_bound=1)
EPSILON_AE = flags.DEFINE_float("epsilon_ae", 1.0,
                                "Budget of the DP auto-encoder (> 0).")
EPSILON_OUT = flags.DEFINE_float("epsilon_out", 1.0,
                                 "Budget of the output layer (> 0).")
LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3,
                                   "Adam's rate (> 0).")
ALPHA = flags.DEFINE_float("alpha", 1.5,
                           "Weight of the adversarial loss (>= 0; 0: none).")
MAX_ATTACK_SIZE = flags.DEFINE_float(
    "max_attack_size", None,
    "Largest training attack size (> 0; L-inf, pixels in [-1, 1]); default "
    "1.0 for mnist, 0.5 for cifar10, 0.1 for tinyimagenet.")
MIN_CURVATURE = flags.DEFINE_float(
    "min_curvature", 0.1,
    "Least eigenvalue the output loss's noisy quadratic coefficient is "
    "raised to (>= 0; keeps the noisy loss bounded below; no privacy cost).")
ATTACK_STEPS = flags.DEFINE_integer(
    "attack_steps", 10,
    "Iterations of I-FGSM, MIM, PGD in training (StoBatch experiments on "
    "digits: 3).", lower_bound=1)
AUGMENTATION_MULTIPLICITY = flags.DEFINE_integer(
    "augmentation_multiplicity", 1,
    "Copies of each training example; anything but 1 is refused (it would "
    "spend the budget once per copy).", lower_bound=1)
SEED = flags.DEFINE_integer("seed", 0,
                            "Seeds initialisation, batching, attack sizes.",
                            lower_bound=0)
NOISE_SEED = flags.DEFINE_integer(
    "noise_seed", None,
    "Seeds the Laplace draws. Tests only: a known seed voids the privacy "
    "guarantee. Default: OS entropy.", lower_bound=0)
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", "runs/stobatch",
    "Where results.json, results.md, TensorBoard logs and checkpoints go.")
CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", None, "Default: RESULTS_DIR/checkpoints.")
CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 100,
                                        "Checkpoint every this many steps.",
                                        lower_bound=1)
LOG_EVERY = flags.DEFINE_integer("log_every", 10,
                                 "TensorBoard scalars every this many steps.",
                                 lower_bound=1)
KAPPAS = flags.DEFINE_list(
    "kappas", ["0.2", "0.4", "0.8", "1.0", "2.0"],
    "Attack sizes (> 0) for robust and certified accuracy (in --eval_norm, "
    "pixels in [-1, 1]: halve them for pixels in [0, 1]; the default L2 "
    "radii are 0.1, 0.2, 0.4, 0.5, 1.0 there).")
EVAL_ATTACKS = flags.DEFINE_list("eval_attacks", ["fgsm", "ifgsm", "mim",
                                                  "pgd"],
                                 "Attacks for robust accuracy.")
EVAL_NORM = flags.DEFINE_enum("eval_norm", "2", ["inf", "2"],
                              "Norm of the evaluation attacks and of the "
                              "certificate.")
EVAL_ATTACK_STEPS = flags.DEFINE_integer("eval_attack_steps", 10,
                                         "Iterations of evaluation attacks.",
                                         lower_bound=1)
EVAL_SIZE = flags.DEFINE_integer("eval_size", 500,
                                 "Evaluate on the first this many test "
                                 "examples (all if <= 0).")
NUM_SAMPLES = flags.DEFINE_integer("num_samples", 100,
                                   "Monte Carlo noise draws per example.",
                                   lower_bound=1)
ATTACK_VOTES = flags.DEFINE_integer(
    "attack_votes", None,
    "Noise draws deciding the deployed prediction on each attacked input "
    "(robust accuracy, the soundness check); default --num_samples, "
    "StoBatch experiments on digits: 20.", lower_bound=1)
CERT_ALPHA = flags.DEFINE_float(
    "cert_alpha", 0.05,
    "Certificates hold w.p. >= 1 - cert_alpha, cert_alpha in (0, 1).")
INFERENCE_NOISE_SCALE = flags.DEFINE_float(
    "inference_noise_scale", None,
    "Scale (> 0) of the fresh input noise at inference (votes): the Laplace "
    "scale for --certificate=pixeldp, the Gaussian's standard deviation for "
    "smoothing. Default --train_input_noise_scale, or the DP input-noise "
    "scale without training noise.")
FORWARD_NOISE = flags.DEFINE_enum(
    "forward_noise", "none", ["none", "dp"],
    "Whether the classifier path adds the DP auto-encoder's Laplace draws in "
    "training ('dp', the paper's model) or only its reconstruction "
    "objective does ('none': the draws protect W1 through that objective "
    "alone, and cost the classifier its accuracy; docs/stobatch.md).")
TRAIN_INPUT_NOISE = flags.DEFINE_enum(
    "train_input_noise", "gaussian", ["none", "gaussian", "laplace"],
    "Fresh per-example noise on the classifier's training inputs (benign "
    "and adversarial), for the noise the model is certified with.")
TRAIN_INPUT_NOISE_SCALE = flags.DEFINE_float(
    "train_input_noise_scale", 0.5,
    "Its standard deviation (gaussian) or Laplace scale (> 0), in input "
    "units (pixels in [-1, 1]).")
CERTIFICATE = flags.DEFINE_enum(
    "certificate", "smoothing", ["smoothing", "pixeldp"],
    "smoothing: Gaussian noise at inference and Cohen et al.'s L2 radius "
    "(needs --eval_norm=2); pixeldp: Laplace noise and the PixelDP bound "
    "(the paper's), in --eval_norm.")

shared_flags.check_range(TEST_FRACTION, above=0, below=1)
shared_flags.check_range(EPSILON_AE, above=0)
shared_flags.check_range(EPSILON_OUT, above=0)
shared_flags.check_range(LEARNING_RATE, above=0)
shared_flags.check_range(ALPHA, at_least=0)
shared_flags.check_range(MAX_ATTACK_SIZE, above=0)
shared_flags.check_range(MIN_CURVATURE, at_least=0)
shared_flags.check_range(KAPPAS, above=0)
shared_flags.check_range(TRAIN_INPUT_NOISE_SCALE, above=0)
shared_flags.check_range(CERT_ALPHA, above=0, below=1)
shared_flags.check_range(INFERENCE_NOISE_SCALE, above=0)
