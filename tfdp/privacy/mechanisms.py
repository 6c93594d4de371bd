"""The Gaussian and Laplace mechanisms: additive noise scaled to sensitivity.

For a query ``f`` and neighbouring datasets ``D ~ D'``:

* L2 sensitivity ``Delta_2 = max ||f(D) - f(D')||_2``. The Gaussian mechanism
  ``f(D) + N(0, (z Delta_2)^2 I)`` with noise multiplier ``z`` is
  ``(epsilon, delta)``-DP for the epsilon and delta dp_accounting gives for
  ``GaussianDpEvent(z)``.
* L1 sensitivity ``Delta_1 = max ||f(D) - f(D')||_1``. The Laplace mechanism
  ``f(D) + Lap(0, b)`` per coordinate, ``b = Delta_1 / epsilon``, is
  ``epsilon``-DP.

Noise is drawn from the operating system's entropy when ``seed`` is None, or
by stateless ops from a shape-[2] integer ``seed`` (same seed, same draws;
for tests: noise that can be recomputed from a known seed protects nothing).
The unseeded draws deliberately ignore TensorFlow's global seed
(`tf.keras.utils.set_random_seed`): a run seeded for reproducible
initialisation and batching must not make its DP noise reproducible too,
and ``tf.random.normal`` would derive its seed from the global one.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from tfdp import _validation


def _secret_uniform(shape, dtype) -> tf.Tensor:
  """U[0, 1), seeded from the OS's entropy whatever the global seed.

  ``seed = seed2 = 0`` makes the kernel draw its own seeds
  (``random::New64``, std::random_device); ``tf.random.uniform`` would pass
  seeds derived from the global seed when one is set.
  """
  return tf.raw_ops.RandomUniform(shape=_shape_tensor(shape), dtype=dtype,
                                  seed=0, seed2=0)


def _secret_normal(shape, dtype) -> tf.Tensor:
  """N(0, 1), seeded from the OS's entropy whatever the global seed."""
  return tf.raw_ops.RandomStandardNormal(shape=_shape_tensor(shape),
                                         dtype=dtype, seed=0, seed2=0)


def _shape_tensor(shape) -> tf.Tensor:
  if isinstance(shape, tf.TensorShape):
    shape = shape.as_list()
  return tf.cast(shape, tf.int64)


def gaussian_stddev(l2_sensitivity: float, noise_multiplier: float) -> float:
  """The Gaussian mechanism's noise stddev, ``z * Delta_2``.

  Args:
    l2_sensitivity: Delta_2, > 0.
    noise_multiplier: z, >= 0.

  Returns:
    ``noise_multiplier * l2_sensitivity``.

  Raises:
    ValueError: on an argument out of range.
  """
  l2_sensitivity = _validation.check_positive("l2_sensitivity", l2_sensitivity)
  noise_multiplier = _validation.check_non_negative(
      "noise_multiplier", noise_multiplier)
  return noise_multiplier * l2_sensitivity


def laplace_scale(l1_sensitivity: float, epsilon: float) -> float:
  """The Laplace mechanism's scale for epsilon-DP, ``b = Delta_1 / epsilon``.

  Args:
    l1_sensitivity: Delta_1, > 0.
    epsilon: > 0.

  Returns:
    ``l1_sensitivity / epsilon``.

  Raises:
    ValueError: on an argument out of range.
  """
  l1_sensitivity = _validation.check_positive("l1_sensitivity", l1_sensitivity)
  epsilon = _validation.check_positive("epsilon", epsilon)
  return l1_sensitivity / epsilon


def gaussian_noise(shape,
                   *,
                   l2_sensitivity: float,
                   noise_multiplier: float,
                   seed: Optional[tf.Tensor] = None,
                   dtype: tf.DType = tf.float32) -> tf.Tensor:
  """Gaussian noise ``N(0, (z Delta_2)^2)`` per coordinate.

  Args:
    shape: The shape of the noise.
    l2_sensitivity: Delta_2 of the query the noise is for, > 0.
    noise_multiplier: z, >= 0.
    seed: None (a secret draw from the OS's entropy) or a shape-[2] integer
      tensor (stateless draw, for tests).
    dtype: A floating dtype.

  Returns:
    A tensor of `shape` and `dtype`.

  Raises:
    ValueError: on an argument out of range.
  """
  stddev = gaussian_stddev(l2_sensitivity, noise_multiplier)
  if seed is None:
    return _secret_normal(shape, dtype) * tf.cast(stddev, dtype)
  return tf.random.stateless_normal(shape, seed, stddev=stddev, dtype=dtype)


def laplace_noise(shape,
                  *,
                  l1_sensitivity: float,
                  epsilon: float,
                  seed: Optional[tf.Tensor] = None,
                  dtype: tf.DType = tf.float32) -> tf.Tensor:
  """Laplace noise ``Lap(0, b)``, ``b = Delta_1 / epsilon``, per coordinate.

  Drawn by inverse CDF: with ``u ~ U(-1/2, 1/2)``,
  ``b sign(u) (-log(1 - 2|u|))`` is ``Lap(0, b)``; ``1 - 2|u|`` is floored at
  the smallest normal number so that ``u = -1/2`` gives a finite draw.

  Args:
    shape: The shape of the noise.
    l1_sensitivity: Delta_1 of the query the noise is for, > 0.
    epsilon: > 0.
    seed: None (a secret draw from the OS's entropy) or a shape-[2] integer
      tensor (stateless draw, for tests).
    dtype: A floating dtype.

  Returns:
    A tensor of `shape` and `dtype`.

  Raises:
    ValueError: on an argument out of range.
  """
  scale = laplace_scale(l1_sensitivity, epsilon)
  dtype = tf.as_dtype(dtype)
  # 16-bit types draw in float32, for their tails and for np.finfo.
  work_dtype = tf.float64 if dtype == tf.float64 else tf.float32
  if seed is None:
    u = _secret_uniform(shape, work_dtype) - 0.5
  else:
    u = tf.random.stateless_uniform(
        shape, seed, minval=-0.5, maxval=0.5, dtype=work_dtype)
  tiny = np.finfo(work_dtype.as_numpy_dtype).tiny
  magnitude = -tf.math.log(tf.maximum(1 - 2 * tf.abs(u), tiny))
  return tf.cast(scale * tf.sign(u) * magnitude, dtype)


def _floating(value) -> tf.Tensor:
  """`value` as a tensor, which must be floating point."""
  value = tf.convert_to_tensor(value)
  if not value.dtype.is_floating:
    raise ValueError(
        f"value must be a floating-point tensor, got dtype {value.dtype.name}")
  return value


def gaussian_mechanism(value: tf.Tensor,
                       *,
                       l2_sensitivity: float,
                       noise_multiplier: float,
                       seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """``value + N(0, (z Delta_2)^2 I)``: the Gaussian mechanism.

  Args:
    value: The query's answer, a floating-point tensor.
    l2_sensitivity: Delta_2 of the query, > 0.
    noise_multiplier: z, >= 0.
    seed: None or a shape-[2] integer tensor; see `gaussian_noise`.

  Returns:
    The noisy answer, same shape and dtype as `value`.
  """
  value = _floating(value)
  return value + gaussian_noise(
      tf.shape(value), l2_sensitivity=l2_sensitivity,
      noise_multiplier=noise_multiplier, seed=seed, dtype=value.dtype)


def laplace_mechanism(value: tf.Tensor,
                      *,
                      l1_sensitivity: float,
                      epsilon: float,
                      seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """``value + Lap(0, Delta_1 / epsilon)``: the epsilon-DP Laplace mechanism.

  Args:
    value: The query's answer, a floating-point tensor.
    l1_sensitivity: Delta_1 of the query, > 0.
    epsilon: > 0.
    seed: None or a shape-[2] integer tensor; see `laplace_noise`.

  Returns:
    The noisy answer, same shape and dtype as `value`.
  """
  value = _floating(value)
  return value + laplace_noise(
      tf.shape(value), l1_sensitivity=l1_sensitivity, epsilon=epsilon,
      seed=seed, dtype=value.dtype)
