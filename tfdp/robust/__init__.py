"""Adversarial robustness for private models.

`AdversarialTraining` adds PGD adversarial training (cleverhans) to
`tfdp.make_private(model, adversarial=...)`, `GaussianAugmentation` trains
on Gaussian-noised inputs (`tfdp.make_private(model, augmentation=...)`) for
randomized smoothing (`smoothing`); `clean_accuracy` and `robust_accuracy`
evaluate a classifier under FGSM and PGD attacks.
cleverhans is imported only when an attack runs.
"""

from tfdp.robust.adversarial import AdversarialTraining
from tfdp.robust.augmentation import GaussianAugmentation
from tfdp.robust.evaluation import clean_accuracy
from tfdp.robust.evaluation import robust_accuracy
from tfdp.robust import smoothing
from tfdp.robust.certification import certified_accuracy
from tfdp.robust.certification import class_probability_bounds
from tfdp.robust.certification import clopper_pearson
from tfdp.robust.certification import clopper_pearson_lower
from tfdp.robust.certification import gaussian_certified
from tfdp.robust.certification import gaussian_radius
from tfdp.robust.certification import laplace_certified
from tfdp.robust.certification import laplace_radius
from tfdp.robust.certification import sample_votes

__all__ = ["AdversarialTraining", "GaussianAugmentation", "clean_accuracy",
           "robust_accuracy", "certified_accuracy", "class_probability_bounds",
           "clopper_pearson", "clopper_pearson_lower", "gaussian_certified",
           "gaussian_radius", "laplace_certified", "laplace_radius",
           "sample_votes", "smoothing"]
