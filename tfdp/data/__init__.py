"""Datasets and DP batch samplers.

Loaders (`load_digits`, `load_npz`, `load_tfds`, `load_tiny_imagenet`;
`read_npz` and `write_npz` for whole image sets, e.g. synthetic ones)
return an `ImageDataset` of float32 NHWC images in [0, 1] with int64 labels
(`split` holds out part of a split, e.g. for validation);
samplers (`poisson_batches`, `fixed_size_batches`, and
`distributed_poisson_batches` for tf.distribute strategies) return a `SampledDataset`
whose sampling the privacy accountant models; `augment` holds per-example
augmentations for `tfdp.make_private(..., augmult=K, augment=...)`.
"""

from tfdp.data import augment

from tfdp.data.datasets import DatasetNotPreparedError
from tfdp.data.datasets import fit_to_frame
from tfdp.data.datasets import ImageDataset
from tfdp.data.datasets import load_digits
from tfdp.data.datasets import load_npz
from tfdp.data.datasets import load_tfds
from tfdp.data.datasets import read_npz
from tfdp.data.datasets import split
from tfdp.data.datasets import Split
from tfdp.data.datasets import TFDS_DATASETS
from tfdp.data.datasets import write_npz
from tfdp.data.sampling import distributed_poisson_batches
from tfdp.data.sampling import fixed_size_batches
from tfdp.data.sampling import poisson_batches
from tfdp.data.sampling import SampledDataset
from tfdp.data.tinyimagenet import load_tiny_imagenet
