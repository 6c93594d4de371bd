"""Running a check script in a fresh process and reading its JSON line.

Some checks need a TensorFlow that has not initialised its devices yet
(logical CPU replicas) or a process of their own (global seeds); each such
script takes the repository root as its argument and prints one JSON line
last.
"""

import json
import pathlib
import subprocess
import sys
from typing import Any, Dict

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_json_script(script: pathlib.Path, timeout: float) -> Dict[str, Any]:
  """Runs `script ROOT` with this Python; returns its last stdout line."""
  result = subprocess.run([sys.executable, str(script), str(ROOT)],
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])
