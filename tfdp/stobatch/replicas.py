"""Replicas for StoBatch's synchronous data parallelism.

`replica_strategy(gpus, allow_cpu_replicas)` returns the
`tf.distribute.Strategy` that runs one replica per requested device:

* ``gpus`` GPUs present (at least as many as asked): a `MirroredStrategy`
  over the first ``gpus`` of them (the default strategy for ``gpus=1``);
* fewer GPUs than asked: a `ValueError` saying how many were asked and found,
  unless ``allow_cpu_replicas``, in which case the (first) physical CPU is
  split into ``gpus`` logical CPU devices and the `MirroredStrategy` runs over
  them, so the same multi-replica code path runs without GPUs (tests use
  this). Logical devices can only be configured before TensorFlow
  initialises its devices (before the first op, `tf.config.list_logical_devices`
  or model built): later, a `RuntimeError` says so. A process that already
  has at least ``gpus`` logical CPUs (configured earlier) reuses them.
"""

import tensorflow as tf

from tfdp import _validation


def _mirrored(devices) -> tf.distribute.Strategy:
  # On CPUs NCCL is unavailable; the reduction-to-one-device all-reduce works
  # everywhere and is exact (a plain sum), which the equal-gradients test of
  # tests/stobatch relies on.
  return tf.distribute.MirroredStrategy(
      devices=list(devices),
      cross_device_ops=tf.distribute.ReductionToOneDevice())


def _cpu_replicas(count: int) -> tf.distribute.Strategy:
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError as error:
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) >= count:
      return _mirrored([d.name for d in logical[:count]])
    raise RuntimeError(
        f"cannot split the CPU into {count} logical devices: TensorFlow has "
        f"already initialised its devices ({len(logical)} logical CPU(s)). "
        "Call replica_strategy before any other TensorFlow operation in the "
        f"process ({error})") from error
  logical = tf.config.list_logical_devices("CPU")
  return _mirrored([d.name for d in logical[:count]])


def replica_strategy(gpus: int,
                     allow_cpu_replicas: bool = False
                     ) -> tf.distribute.Strategy:
  """The strategy with one replica per requested GPU (or logical CPU).

  Args:
    gpus: number of replicas N, an integer >= 1.
    allow_cpu_replicas: with fewer than N GPUs, split the CPU into N logical
      devices instead of failing.

  Returns:
    ``tf.distribute.get_strategy()`` (the default, one replica) for N = 1
    without ``allow_cpu_replicas`` forcing anything; otherwise a
    `MirroredStrategy` with ``num_replicas_in_sync == N``.

  Raises:
    ValueError: if `gpus` is not an integer >= 1, or fewer than N GPUs are
      available and `allow_cpu_replicas` is False.
    RuntimeError: if CPU replicas are needed but TensorFlow has already
      initialised its devices.
  """
  count = _validation.check_positive_int("gpus", gpus)
  if not isinstance(allow_cpu_replicas, bool):
    raise ValueError(f"allow_cpu_replicas must be True or False, got "
                     f"{allow_cpu_replicas!r}")
  found = tf.config.list_physical_devices("GPU")
  if count == 1:
    return tf.distribute.get_strategy()
  if len(found) >= count:
    names = [f"/gpu:{i}" for i in range(count)]
    return _mirrored(names)
  if not allow_cpu_replicas:
    raise ValueError(
        f"--gpus={count} asks for {count} replicas but {len(found)} GPU(s) "
        f"were found; pass --allow_cpu_replicas to split the CPU into "
        f"{count} logical devices and run the same {count}-replica code path "
        f"on the CPU (slower), or lower --gpus")
  return _cpu_replicas(count)
