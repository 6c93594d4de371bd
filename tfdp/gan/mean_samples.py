"""Mean samples: private images averaged and noised, released once.

A mean sample is the average of ``m`` private images drawn at random
without replacement, plus Gaussian noise (the ported system's "mean
samples"; m = 5000, noise std 0.22 on MNIST):

    s = (1/m) sum_{i in S} x_i + N(0, std^2 I),   |S| = m.

With pixel values in a range of width r and d pixels per image, changing one
image moves the average by at most ``r sqrt(d) / m`` in L2 norm (replace-one;
under add/remove-one, couple the random subsets of the two datasets so that
they differ in at most one image: the same bound). Each mean sample is so a
Gaussian mechanism with noise multiplier ``z1 = std m / (r sqrt(d))``, and k
of them compose to one Gaussian mechanism with ``z = z1 / sqrt(k)``, whatever
subsets they share (no amplification by subsampling is claimed). That z is
what `tfdp.privacy.compute_epsilon(..., release_noise_multiplier=z)` adds to
the discriminator's budget.

The ported system computes z with 3 channels and 64x64 pixels whatever the
data (wrong for 28x28 MNIST) and leaves it out of its budget report; here d
is the images' own size and the cost is always composed in.

Example:
  >>> images = np.random.default_rng(0).random((1000, 8, 8, 1), np.float32)
  >>> samples, z = release(images, num_samples=16, mean_size=500,
  ...                      noise_std=0.2)
  >>> samples.shape, round(z, 2)
  ((16, 8, 8, 1), 3.12)
"""

import math
from typing import Optional, Tuple

import numpy as np

from tfdp import _validation
from tfdp.privacy import mechanisms


def sensitivity(mean_size: int, image_shape: Tuple[int, ...],
                value_range: float = 1.0) -> float:
  """One mean sample's L2 sensitivity, ``r sqrt(d) / m``."""
  return value_range * math.sqrt(int(np.prod(image_shape))) / mean_size


def noise_multiplier(noise_std: float, mean_size: int, num_samples: int,
                     image_shape: Tuple[int, ...],
                     value_range: float = 1.0) -> float:
  """z of `num_samples` mean samples together: ``std m / (r sqrt(d k))``.

  Args:
    noise_std: The noise standard deviation per pixel, > 0.
    mean_size: m, images averaged per mean sample, >= 1.
    num_samples: k, the number of mean samples released, >= 1.
    image_shape: The shape of one image (d = its number of values).
    value_range: r, the width of the pixel range (1 for [0, 1]), > 0.

  Returns:
    The noise multiplier of the k releases composed.
  """
  noise_std = _validation.check_positive("noise_std", noise_std)
  mean_size = _validation.check_positive_int("mean_size", mean_size)
  num_samples = _validation.check_positive_int("num_samples", num_samples)
  value_range = _validation.check_positive("value_range", value_range)
  return (noise_std / sensitivity(mean_size, image_shape, value_range) /
          math.sqrt(num_samples))


def release(images: np.ndarray,
            num_samples: int,
            mean_size: int,
            noise_std: float,
            *,
            value_range: float = 1.0,
            seed: Optional[int] = None) -> Tuple[np.ndarray, float]:
  """Draws `num_samples` mean samples of `images` (see the module docstring).

  Args:
    images: The private images [N, ...], values in a range of width
      `value_range` (checked).
    num_samples: k >= 1.
    mean_size: m, in [1, N].
    noise_std: The noise standard deviation per pixel, > 0.
    value_range: The width of the pixel range, > 0.
    seed: Seeds the choice of subsets only; the noise is always drawn from
      the OS's entropy.

  Returns:
    (the mean samples [k, ...] as float32, their composed noise multiplier
    z for the accountant).

  Raises:
    ValueError: on an argument out of range, or pixel values spanning more
      than `value_range`.
  """
  images = np.asarray(images, np.float32)
  if len(images) == 0:
    raise ValueError("images is empty: no mean sample can be drawn")
  mean_size = _validation.check_positive_int("mean_size", mean_size)
  if mean_size > len(images):
    raise ValueError(f"mean_size ({mean_size}) must be at most the number of "
                     f"private images ({len(images)})")
  z = noise_multiplier(noise_std, mean_size, num_samples, images.shape[1:],
                       value_range)
  spread = float(images.max() - images.min())
  if spread > value_range:
    raise ValueError(f"pixel values span {spread:g}, more than value_range="
                     f"{value_range:g}: the sensitivity would be understated")
  rng = np.random.default_rng(seed)
  averages = np.stack([
      images[rng.choice(len(images), mean_size, replace=False)].mean(axis=0)
      for _ in range(num_samples)])
  one = sensitivity(mean_size, images.shape[1:], value_range)
  noise = mechanisms.gaussian_noise(averages.shape, l2_sensitivity=one,
                                    noise_multiplier=noise_std / one)
  return (averages + noise.numpy()).astype(np.float32), z


__all__ = ["noise_multiplier", "release", "sensitivity"]
