"""Shared output helpers for experiments: run directories, tables, JSON."""

import datetime
import glob
import itertools
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
    runs = sorted(run.rstrip(os.sep)
                  for run in glob.glob(os.path.join(parent, "*", "")))
    if not runs:
      raise app.UsageError(f"--resume: no run of {experiment} in {parent}")
    path = runs[-1].rstrip(os.sep)
    if os.path.exists(os.path.join(path, "results.json")):
      raise app.UsageError(
          f"--resume: the latest run, {path}, finished (it has results.json);"
          " nothing to resume. Run without --resume to start a new one.")
    return path
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  os.makedirs(parent, exist_ok=True)
  # Runs started in the same second get -002, -003...: never share a
  # directory, and still sort in the order they started.
  for attempt in itertools.count(1):
    path = os.path.join(parent, stamp if attempt == 1 else
                        f"{stamp}-{attempt:03d}")
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue


def made_directory(path: str) -> str:
  """`path`, created if missing (a fixed --results_dir)."""
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


def header(experiment: str, settings: Mapping[str, object]) -> List[str]:
  """results.md's first lines: title, command, the other settings.

  `settings` holds "command", "dataset" and "model" among its entries.
  """
  return [f"# {experiment}: {settings['dataset']}, {settings['model']}", "",
          f"`{settings['command']}`", "",
          ", ".join(f"{k}={settings[k]}" for k in sorted(settings)
                    if k != "command"), ""]


def inference_noise(evaluation: Mapping[str, object]) -> str:
  """A StoBatch evaluation's vote noise: N(0, b^2) or Lap(b), and its bound."""
  b = f"{evaluation['noise_scale']:.3g}"
  if evaluation.get("certificate", "pixeldp") == "smoothing":
    return f"N(0, {b}^2), smoothing"
  return f"Lap({b}), PixelDP"


def write_json(path: str, results: Dict[str, object]) -> None:
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
    f.write("\n")


def append_json_line(path: str, record: Mapping[str, object]) -> None:
  """Appends one JSON record as a line (a log that survives a crash)."""
  with open(path, "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")


def read_json_lines(path: str) -> List[Dict[str, object]]:
  """The records of `append_json_line`'s log; [] if there is none yet."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_results(results_dir: str, results: Dict[str, object],
                  markdown: str) -> None:
  """Writes RESULTS_DIR/results.json and RESULTS_DIR/results.md."""
  os.makedirs(results_dir, exist_ok=True)
  write_json(os.path.join(results_dir, "results.json"), results)
  with open(os.path.join(results_dir, "results.md"), "w") as f:
    f.write(markdown)


def plot_curves(curves: Mapping[str, Mapping[float, float]], path: str, *,
                xlabel: str, ylabel: str, title: str = "") -> None:
  """One line per label through its (x, y) points, saved as a PNG.

  E.g. certified accuracy against radius, one line per method or epsilon.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, ax = plt.subplots(figsize=(5.5, 4))
  for label, points in curves.items():
    xs = sorted(points)
    ax.plot(xs, [points[x] for x in xs], marker="o", label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def save_image(array, path: str, *, scale: int = 1) -> None:
  """Writes an image array [H, W, C] with values in [0, 1] as a PNG.

  One channel is written in grey; `scale` repeats each pixel (small digits).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  image = np.clip(np.asarray(array, np.float32), 0, 1)
  image = image.repeat(scale, axis=0).repeat(scale, axis=1)
  if image.shape[-1] == 1:
    plt.imsave(path, image[..., 0], cmap="gray", vmin=0, vmax=1)
  else:
    plt.imsave(path, image)
