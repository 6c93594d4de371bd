"""MultiWorkerMirroredStrategy: two worker processes on localhost."""

import json
import pathlib
import subprocess
import sys

import dp_accounting
import numpy as np

from tests import noise_stats
from tests import scripts

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_two_workers_match_one_process_and_add_noise_once():
  ports = scripts.free_ports(2)
  workers = [subprocess.Popen(
      [sys.executable, str(ROOT / "tests" / "multiworker_check.py"),
       str(ROOT), str(index), *ports],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for index in range(2)]
  try:
    outputs = [worker.communicate(timeout=600) for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
  reports = []
  for worker, (stdout, stderr) in zip(workers, outputs):
    assert worker.returncode == 0, stderr[-3000:]
    reports.append(json.loads(stdout.strip().splitlines()[-1]))
  for report in reports:
    assert report["replicas"] == 2
    # The same update as one process on the same global batch, and as the
    # one-example-at-a-time oracle.
    assert report["strategy_vs_single_relative_error"] < 1e-5
    assert report["strategy_relative_error"] < 1e-5
  # Both workers hold the same noisy weights after the step.
  np.testing.assert_array_equal(reports[0]["fit_weight_change"],
                                reports[1]["fit_weight_change"])
  report = reports[0]
  n, expected = report["noise_size"], report["expected_std"]
  # Noise drawn on each worker would give sqrt(2) sigma C; none, 0.
  assert abs(report["noise_std"] - expected) < (
      noise_stats.Z * expected / np.sqrt(2 * n))
  assert abs(report["noise_mean"]) < noise_stats.Z * expected / np.sqrt(n)
  noise_stats.assert_noise_std(report["fit_weight_change"])
  # Each worker samples its replica's rows with the global q: the union is a
  # Poisson sample of the whole set (tests/strategy_checks.sampled_rows).
  union = [steps0 + steps1 for steps0, steps1 in
           zip(reports[0]["sampled_rows"], reports[1]["sampled_rows"])]
  noise_stats.assert_poisson_union(union, size=200, batch=20)
  # model.fit on those batches: both workers took the same 6 steps, the
  # accountant counted each once, and the weights stayed in sync.
  fits = [r["fit_with_sampler"] for r in reports]
  assert fits[0] == fits[1]
  assert fits[0]["steps"] == fits[0]["iterations"] == 6


def _cluster(trainer: str, workdir: pathlib.Path, phase: str):
  """Runs the two workers of tests/trainers_multiworker_check.py."""
  ports = scripts.free_ports(2)
  return [subprocess.Popen(
      [sys.executable, str(ROOT / "tests" / "trainers_multiworker_check.py"),
       str(ROOT), trainer, str(workdir), phase, str(index), *ports],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for index in range(2)]


def _killed_and_resumed(trainer: str, workdir: pathlib.Path):
  """Worker 0 dies by SIGKILL at step 3 of 4; both are started again."""
  chief, other = _cluster(trainer, workdir, "kill")
  try:
    _, stderr = chief.communicate(timeout=600)
    # SIGKILL: no handler ran, nothing was saved after the step-2 checkpoint.
    assert chief.returncode == -9, stderr[-3000:]
  finally:
    chief.kill()
    other.kill()  # It waits for the dead chief in the all-reduce.
    other.communicate()
  workers = _cluster(trainer, workdir, "resume")
  try:
    outputs = [worker.communicate(timeout=600) for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
  reports = []
  for worker, (stdout, stderr) in zip(workers, outputs):
    assert worker.returncode == 0, stderr[-3000:]
    reports.append(json.loads(stdout.strip().splitlines()[-1]))
  # Only the chief's checkpoints stay; no worker left its own copy.
  names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert not [name for name in names if name.startswith(".worker")], names
  assert reports[0]["weights_digest"] == reports[1]["weights_digest"]
  return reports


def test_stobatch_two_workers_killed_and_resumed(tmp_path):
  reports = _killed_and_resumed("stobatch", tmp_path)
  for report in reports:
    assert report["replicas"] == 2
    # Resumed from the checkpoint of step 2 (model, fixed noise, optimizer
    # slots and step): steps 3 and 4 ran, once.
    assert report["restored_equal"]
    assert report["restored_iterations"] == 2
    assert report["steps_run"] == [3, 4]
    assert report["iterations"] == 4
    # The update direction of one replica holding both replicas' batches
    # (float32 sums in another order).
    assert report["vs_one_replica"] < 1e-4
  # The fixed noise, drawn from the chief's secret entropy, is the same on
  # both workers (broadcast when the variables are created).
  assert reports[0]["noise_digest"] == reports[1]["noise_digest"]


def test_dp_gan_two_workers_killed_resumed_and_noise_added_once(tmp_path):
  reports = _killed_and_resumed("dp_gan", tmp_path)
  for report in reports:
    assert report["replicas"] == 2
    assert report["restored_equal"]
    assert report["restored_iterations"] == 2
    assert report["steps_taken_now"] == 2
    assert report["iterations"] == report["spent_steps"] == 4
    # The epsilon of 4 steps at the whole set's q, from dp_accounting.
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            report["q"], dp_accounting.GaussianDpEvent(1.0)), 4)
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(event)
    assert abs(report["epsilon"] - accountant.get_epsilon(1e-3)) < 1e-2
  noise = reports[0]["noise"]
  n, expected = noise["size"], noise["expected_std"]
  # One replica adds sigma C / B; both would give sqrt(2) times that.
  assert abs(noise["std"] - expected) < noise_stats.Z * expected / np.sqrt(
      2 * n)
  assert abs(noise["mean"]) < noise_stats.Z * expected / np.sqrt(n)
