"""Crash-safe resume: kill -9 during fit, resume, count every DP step once.

tests/resume_check.py trains a private model with BackupAndRestore and
PrivacyCallback (in either order), kills itself with SIGKILL in the middle of
epoch 3, and is run again to resume; the second run ends with a second fit
under a new accountant. Whatever the order, the epsilon reported must be
dp_accounting's for the optimizer's steps (the lineage of the final
weights), and training must continue from the backup's weights and
optimizer slots.
"""

import json
import pathlib
import signal
import subprocess
import sys

import pytest

from tests import scripts
from tfdp import privacy

SCRIPT = pathlib.Path(__file__).with_name("resume_check.py")
N, BATCH, STEPS_PER_EPOCH, EPOCHS, SIGMA, DELTA = 200, 20, 10, 4, 1.0, 1e-3


def _epsilon(steps):
  return privacy.compute_epsilon(SIGMA, steps, DELTA, batch_size=BATCH,
                                 dataset_size=N).epsilon


def _check_resumed(result):
  # Training went on from the backup of epoch 2: weights, momentum slots
  # and step count as backed up.
  assert result["restored_iterations"] == 2 * STEPS_PER_EPOCH
  assert result["restored_equals_backup"]
  total = EPOCHS * STEPS_PER_EPOCH
  assert result["first_fit"]["steps"] == total
  assert result["first_fit"]["epsilon"] == pytest.approx(_epsilon(total),
                                                         rel=1e-9)
  # The second fit's new accountant counts the first fit's steps too.
  assert result["iterations"] == total + STEPS_PER_EPOCH
  assert result["second_fit"]["steps"] == total + STEPS_PER_EPOCH
  assert result["second_fit"]["epsilon"] == pytest.approx(
      _epsilon(total + STEPS_PER_EPOCH), rel=1e-9)
  assert result["first_accountant_after_second_fit"] == (
      total + STEPS_PER_EPOCH)


@pytest.mark.parametrize("order", ["backup_first", "privacy_first"])
def test_killed_run_resumes_and_counts_every_step_once(order, tmp_path):
  killed = scripts.run_script(SCRIPT, str(tmp_path), order, "kill",
                              timeout=300)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  _check_resumed(scripts.run_json_script(SCRIPT, str(tmp_path), order,
                                         "resume", timeout=300))


def _workers(workdir, phase):
  """Starts the two workers of resume_check.py on fresh loopback ports."""
  ports = scripts.free_ports(2)
  return [subprocess.Popen(
      [sys.executable, str(SCRIPT), str(scripts.ROOT), str(workdir),
       "backup_first", phase, str(index), *ports],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for index in range(2)]


def test_two_workers_killed_resume_and_count_every_step_once(tmp_path):
  """Worker 0 dies by SIGKILL mid-epoch 3; both restart from the backup."""
  workers = _workers(tmp_path, "kill")
  try:
    _, stderr = workers[0].communicate(timeout=300)
    assert workers[0].returncode == -signal.SIGKILL, stderr[-3000:]
  finally:
    for worker in workers:  # Worker 1 waits for worker 0's all-reduce.
      worker.kill()
      worker.communicate()
  workers = _workers(tmp_path, "resume")
  outputs = [worker.communicate(timeout=300) for worker in workers]
  for worker, (stdout, stderr) in zip(workers, outputs):
    assert worker.returncode == 0, stderr[-3000:]
    _check_resumed(json.loads(stdout.strip().splitlines()[-1]))
