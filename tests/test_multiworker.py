"""MultiWorkerMirroredStrategy: two worker processes on localhost."""

import json
import pathlib
import subprocess
import sys

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
