"""Adversarial training and evaluation flags: PGD inside the DP loop.

The same PGD settings make the training examples (with --robust) and measure
robust accuracy; FGSM is evaluated at the same epsilon and norm.
"""

from absl import flags

import flags as shared_flags

ROBUST = flags.DEFINE_bool(
    "robust", False,
    "Adversarial training: replace each private example, with probability "
    "--adv_ratio, by its PGD example against the current model before "
    "clipping.")
PGD_NORM = flags.DEFINE_enum(
    "pgd_norm", "inf", ["inf", "2"],
    "Norm of the perturbation ball: L-infinity or L2.")
PGD_EPSILON = flags.DEFINE_float(
    "pgd_epsilon", 0.1,
    "Radius of the perturbation ball, in pixel units of images in [0, 1] "
    "(> 0).")
PGD_STEP_SIZE = flags.DEFINE_float(
    "pgd_step_size", None,
    "PGD step size, in (0, --pgd_epsilon]; default min(epsilon, 2.5 * "
    "epsilon / steps) (Madry et al.), for training and evaluation alike.")
PGD_STEPS = flags.DEFINE_integer("pgd_steps", 10,
                                 "PGD iterations, for training.",
                                 lower_bound=1)
PGD_RANDOM_START = flags.DEFINE_bool(
    "pgd_random_start", True,
    "Start PGD from a uniformly random point of the ball.")
ADV_RATIO = flags.DEFINE_float(
    "adv_ratio", 0.5,
    "Probability, in (0, 1], that a training example is replaced by its "
    "adversarial example (each by its own coin); the rest stay clean.")
EVAL_PGD_STEPS = flags.DEFINE_integer(
    "eval_pgd_steps", 20, "PGD iterations when measuring robust accuracy.",
    lower_bound=1)
EVAL_SIZE = flags.DEFINE_integer(
    "eval_size", None,
    "Evaluate robust accuracy on the first this many test examples (all if "
    "unset); clean accuracy always uses the whole test split.",
    lower_bound=1)

shared_flags.check_range(PGD_EPSILON, above=0)
shared_flags.check_range(PGD_STEP_SIZE, above=0)
shared_flags.check_range(ADV_RATIO, above=0, at_most=1)
