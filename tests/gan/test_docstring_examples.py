"""The runnable examples in tfdp.gan's docstrings stay true."""

import doctest

import numpy as np
import pytest
import tensorflow as tf

from tfdp.gan import evaluation
from tfdp.gan import mean_samples
from tfdp.gan import models
from tfdp.gan import trainer


@pytest.mark.parametrize("module", [models, mean_samples, trainer, evaluation],
                         ids=lambda m: m.__name__)
def test_examples_run(module):
  result = doctest.testmod(module, extraglobs={"np": np, "tf": tf})
  assert result.attempted > 0 and result.failed == 0
