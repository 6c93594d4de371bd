"""The experiments' shared output helpers."""

import concurrent.futures

from experiments import _report


def test_runs_started_together_get_their_own_directories(tmp_path):
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    paths = list(pool.map(
        lambda _: _report.run_directory(str(tmp_path), "exp"), range(8)))
  assert len(set(paths)) == 8
  # --resume takes the newest: within one second, the last suffix.
  newest = _report.run_directory(str(tmp_path), "exp", resume=True)
  assert newest == sorted(paths)[-1]
