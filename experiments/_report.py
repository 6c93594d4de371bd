"""Shared output helpers for experiments: run directories, tables, JSON."""

import datetime
import json
import os
from typing import Dict, List, Mapping, Sequence


def run_directory(output_dir: str, experiment: str) -> str:
  """Creates and returns OUTPUT_DIR/EXPERIMENT/YYYYmmdd-HHMMSS."""
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  path = os.path.join(output_dir, experiment, stamp)
  os.makedirs(path, exist_ok=True)
  return path


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
