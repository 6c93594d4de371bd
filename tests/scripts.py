"""Running a check script in a fresh process and reading its JSON line.

Some checks need a TensorFlow that has not initialised its devices yet
(logical CPU replicas) or a process of their own (global seeds); each such
script takes the repository root as its argument and prints one JSON line
last.
"""

import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Dict

from experiments._ports import free_ports  # pylint: disable=unused-import

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(script: pathlib.Path, *args: str,
               timeout: float) -> subprocess.CompletedProcess:
  """Runs `script ROOT *args` with this Python and returns the process."""
  return subprocess.run([sys.executable, str(script), str(ROOT), *args],
                        capture_output=True, text=True, timeout=timeout)


def run_python(code: str, env: Dict[str, str],
               timeout: float) -> subprocess.CompletedProcess:
  """Runs `python -c code` in ROOT, with `env` added to this environment."""
  return subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env={**os.environ, **env}, cwd=ROOT,
                        timeout=timeout)


def run_json_script(script: pathlib.Path, *args: str,
                    timeout: float) -> Dict[str, Any]:
  """Runs `script ROOT *args`; checks it succeeds, returns its last line."""
  result = run_script(script, *args, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])

