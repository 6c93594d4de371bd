"""experiments.robustness_table: one unit of radius across methods."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write(directory: pathlib.Path, results) -> str:
  directory.mkdir()
  (directory / "results.json").write_text(json.dumps(results))
  return str(directory)


def _stobatch():
  # Kappas in model units (pixels in [-1, 1]): 0.2 and 1 are radii 0.1 and
  # 0.5 in [0, 1] units.
  return {
      "command": "stobatch_mnist.py --steps=60", "epsilon": 2.0,
      "evaluation": {
          "norm": "2", "noise_scale": 0.5, "certificate": "smoothing",
          "base_accuracy": 0.94, "conventional_accuracy": 0.93,
          "certified_accuracy": {"0.2": 0.9, "1": 0.0},
          "robust_accuracy": {"pgd": {"0.2": 0.92, "1": 0.87},
                              "fgsm": {"0.2": 0.5, "1": 0.4}},
          "soundness": {"0.2": {"certified": 470, "flipped": 0},
                        "1": {"certified": 0, "flipped": 0}}}}


def _smoothing():
  return {
      "epsilon": 1.99, "delta": 1e-5, "base_test_accuracy": 0.9,
      "settings": {"command": "python -m experiments.dp_smoothing"},
      "evaluation": {
          "sigma": 0.25, "accuracy": 0.91,
          "certified_accuracy": {"0.1": 0.87, "0.2": 0.8},
          "pgd": {"0.1": {"accuracy": 0.88, "certified": 450, "flipped": 0},
                  "0.2": {"accuracy": 0.85, "certified": 420,
                          "flipped": 1}}}}


def test_table_puts_radii_on_one_scale(tmp_path):
  stobatch = _write(tmp_path / "sb", _stobatch())
  smoothing = _write(tmp_path / "dps", _smoothing())
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.robustness_table",
       f"--stobatch={stobatch}", f"--dp_smoothing={smoothing}",
       f"--output_dir={out}"], capture_output=True, text=True, cwd=ROOT,
      timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  text = (out / "table.md").read_text()
  header = next(line for line in text.splitlines()
                if line.startswith("| method"))
  assert ("cert. 0.1 | cert. 0.2 | cert. 0.5 | PGD 0.1 | PGD 0.2 | PGD 0.5"
          in header)
  rows = [line for line in text.splitlines()
          if line.startswith("| StoBatch") or line.startswith("| DP-SGD")]
  # StoBatch's kappa 0.2 is radius 0.1, its PGD column the PGD attack's;
  # no radius 0.2 was measured for it.
  assert rows[0] == ("| StoBatch | 2 (pure) | 0.94 | 0.93 | 0.9 | - | 0 | "
                     "0.92 | - | 0.87 | 470/0, -, 0/0 |")
  assert rows[1] == ("| DP-SGD + smoothing, sigma 0.25 | 1.99 (delta 1e-05) | "
                     "0.9 | 0.91 | 0.87 | 0.8 | - | 0.88 | 0.85 | - | "
                     "450/0, 420/1, - |")
  assert "N(0, 0.5^2), smoothing" in text
  assert (out / "certified_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_table_refuses_a_directory_without_results(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.robustness_table",
       f"--stobatch={tmp_path}", f"--output_dir={tmp_path}/out"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode != 0
  assert "no results.json" in result.stderr
