"""Adversarial robustness for private models.

`AdversarialTraining` adds PGD adversarial training (cleverhans) to
`tfdp.make_private(model, adversarial=...)`; `clean_accuracy` and
`robust_accuracy` evaluate a classifier under FGSM and PGD attacks.
cleverhans is imported only when an attack runs.
"""

from tfdp.robust.adversarial import AdversarialTraining
from tfdp.robust.evaluation import clean_accuracy
from tfdp.robust.evaluation import robust_accuracy

__all__ = ["AdversarialTraining", "clean_accuracy", "robust_accuracy"]
