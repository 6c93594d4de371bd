"""Datasets and DP batch samplers.

Loaders (`load_digits`, `load_npz`, `load_tfds`, `load_tiny_imagenet`)
return an `ImageDataset` of float32 NHWC images in [0, 1] with int64 labels
(`split` holds out part of a split, e.g. for validation);
samplers (`poisson_batches`, `fixed_size_batches`) return a `SampledDataset`
whose sampling the privacy accountant models.
"""

from tfdp.data.datasets import DatasetNotPreparedError
from tfdp.data.datasets import ImageDataset
from tfdp.data.datasets import load_digits
from tfdp.data.datasets import load_npz
from tfdp.data.datasets import load_tfds
from tfdp.data.datasets import split
from tfdp.data.datasets import Split
from tfdp.data.datasets import TFDS_DATASETS
from tfdp.data.sampling import fixed_size_batches
from tfdp.data.sampling import poisson_batches
from tfdp.data.sampling import SampledDataset
from tfdp.data.tinyimagenet import load_tiny_imagenet
