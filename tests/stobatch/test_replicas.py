"""replica_strategy: N logical CPU replicas, and clear refusals.

Logical devices can only be configured before TensorFlow initialises its
devices, so each case runs in a fresh process (replicas_check.py).
"""

import pathlib

import pytest
import tensorflow as tf

from tfdp.stobatch import replicas

from tests import scripts

SCRIPT = pathlib.Path(__file__).with_name("replicas_check.py")
NO_GPU = not tf.config.list_physical_devices("GPU")


@pytest.fixture(scope="module")
def checked():
  return scripts.run_json_script(SCRIPT, timeout=120)


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU fall-back")
def test_four_logical_cpu_replicas(checked):
  assert checked["replicas"] == 4
  assert len(set(checked["devices"])) == 4
  assert all("CPU" in d.upper() for d in checked["devices"])
  assert checked["ids"] == [0, 1, 2, 3]


@pytest.mark.skipif(not NO_GPU, reason="needs fewer GPUs than asked")
def test_refuses_without_allow_cpu_replicas(checked):
  message = checked["refused"]
  assert "4 replicas" in message and "0 GPU(s)" in message
  assert "--allow_cpu_replicas" in message


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU fall-back")
def test_too_late_to_split_the_cpu(checked):
  assert "already initialised" in checked["too_late"]


def test_one_replica_is_the_default_strategy():
  assert replicas.replica_strategy(1).num_replicas_in_sync == 1


@pytest.mark.parametrize("gpus", [0, -1, 1.5, True])
def test_rejects_bad_gpus(gpus):
  with pytest.raises(ValueError, match="gpus"):
    replicas.replica_strategy(gpus)
