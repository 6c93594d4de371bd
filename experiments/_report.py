"""Shared output helpers for experiments: run directories, tables, JSON."""

import datetime
import glob
import json
import os
from typing import Dict, List, Mapping, Sequence

from absl import app


def run_directory(output_dir: str, experiment: str,
                  resume: bool = False) -> str:
  """OUTPUT_DIR/EXPERIMENT/YYYYmmdd-HHMMSS: a new one, or the latest to resume.

  Raises:
    app.UsageError: with `resume`, when there is no run to resume, or the
      latest one finished (it has results.json).
  """
  parent = os.path.join(output_dir, experiment)
  if resume:
    runs = sorted(glob.glob(os.path.join(parent, "*", "")))
    if not runs:
      raise app.UsageError(f"--resume: no run of {experiment} in {parent}")
    path = runs[-1].rstrip(os.sep)
    if os.path.exists(os.path.join(path, "results.json")):
      raise app.UsageError(
          f"--resume: the latest run, {path}, finished (it has results.json);"
          " nothing to resume. Run without --resume to start a new one.")
    return path
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  path = os.path.join(parent, stamp)
  os.makedirs(path, exist_ok=True)
  return path


def backup_callback(run_dir: str):
  """BackupAndRestore under RUN_DIR/backup: model, optimizer, accountant.

  It saves at the end of every epoch and restores from there when `fit`
  starts again in the same directory (`--resume`); the accountant of a
  `tfdp.callbacks.PrivacyCallback` is saved with the optimizer, so the
  resumed run counts every step of the restored weights once. Keras deletes
  the backup when `fit` ends normally.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"))


def _format(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
  """Formats rows that share their keys as a markdown table."""
  columns: List[str] = list(rows[0])
  lines = ["| " + " | ".join(columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_format(row[c]) for c in columns) + " |")
  return "\n".join(lines)


def write_json(path: str, results: Dict[str, object]) -> None:
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
    f.write("\n")
