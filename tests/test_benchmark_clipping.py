"""The clipping benchmark runs end to end on a tiny model and reports."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from tfdp import _optional

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_benchmark_tiny_run(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark_clipping",
       "--models=papernot", "--configs=nonprivate,tfdp", "--batch_size=8",
       "--steps=2", "--warmup_steps=1", "--width=0.25", "--profile",
       "--bfc_allocator", f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]

  results = json.loads((tmp_path / "results.json").read_text())
  rows = {row["config"]: row for row in results["rows"]}
  assert set(rows) == {"nonprivate", "tfdp"}
  for row in rows.values():
    assert row["status"] == "ok", row
    assert row["model"] == "papernot"
    assert len(row["step_times_s"]) == 2
    assert row["seconds_per_step"] > 0 and row["examples_per_s"] > 0
    assert row["time_ratio"] > 0 and row["memory_ratio"] > 0
    assert 0 < row["peak_rss_gib"] < 24
    # --bfc_allocator: TensorFlow's own count, below the process's RSS.
    assert 0 < row["peak_tensors_gib"] < row["peak_rss_gib"]
    assert row["tensor_memory_ratio"] > 0
  assert rows["nonprivate"]["time_ratio"] == 1.0
  assert results["settings"]["batch_size"] == 8

  table = (tmp_path / "results.md").read_text()
  assert "| papernot | tfdp |" in table
  assert "time x nonprivate" in table and "tensors x nonprivate" in table
  assert "| papernot | tfdp |" in result.stdout
  assert (tmp_path / "time_ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  # --profile: one row per layer with weights (6 convs, 2 dense) and a total.
  layers = [row for row in results["profile"] if row["layer"] != "total"]
  assert len(layers) == 8
  assert all(row["weight_gradient_ms"] > 0 and row["norms_and_sum_ms"] > 0
             for row in layers)
  assert "| papernot | total |" in (tmp_path / "profile.md").read_text()


def test_transformer_on_tokens_runs_on_the_fast_path(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark_clipping",
       "--models=text", "--configs=tfdp", "--batch_size=4", "--steps=1",
       "--warmup_steps=1", "--width=0.0625", "--profile",
       f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  (row,) = results["rows"]
  assert row["status"] == "ok" and row["note"] == "fast rules for every layer"
  types = {r.get("type") for r in results["profile"]}
  # Token embedding, positions, attention projections, norms, MLP.
  assert {"Embedding", "PositionEmbedding", "EinsumDense",
          "LayerNormalization", "Dense"} <= types


def test_configuration_out_of_memory_becomes_a_row(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark_clipping",
       "--models=papernot", "--configs=nonprivate", "--memory_limit_gib=0.05",
       f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
  assert row["status"] == "out of memory (resident > 0.1 GiB)"
  assert row["seconds_per_step"] is None and row["time_ratio"] is None
  table = (tmp_path / "results.md").read_text()
  assert "| papernot | nonprivate | - |" in table
  assert (tmp_path / "time_ratios.png").exists()


def test_the_pytorch_peer_runs_or_says_how_to_install_it(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark_clipping",
       "--models=papernot,wrn16_4", "--configs=torch_nonprivate,opacus_ghost",
       "--batch_size=4", "--steps=1", "--warmup_steps=1", "--width=0.125",
       f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {(r["model"], r["config"]): r for r in
          json.loads((tmp_path / "results.json").read_text())["rows"]}
  # No PyTorch twin of the WRN.
  assert rows["wrn16_4", "opacus_ghost"]["status"].startswith(
      "skipped: no PyTorch twin")
  ghost = rows["papernot", "opacus_ghost"]
  if importlib.util.find_spec("opacus") is None:
    assert ghost["status"] == (
        'skipped: install the peer with pip install -e ".[bench]"')
  else:
    assert ghost["status"] == "ok" and ghost["note"].startswith("Opacus")
    # Its ratio is to PyTorch's own non-private step.
    assert ghost["time_ratio"] == pytest.approx(
        ghost["seconds_per_step"] /
        rows["papernot", "torch_nonprivate"]["seconds_per_step"])


def test_tf_privacy_baselines_run_or_say_what_they_need(tmp_path):
  """On TensorFlow >= 2.16 TF Privacy 0.9.0 does not import: a skipped row."""
  missing = _optional.missing_tensorflow_privacy()
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark_clipping",
       "--models=papernot", "--configs=tfp_fast", "--batch_size=4",
       "--steps=1", "--warmup_steps=1", "--slow_baseline_steps=1",
       "--width=0.125", f"--results_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
  if missing is None:
    assert row["status"] == "ok", row
  else:
    assert row["status"] == "skipped: " + missing
    assert 'pip install -e ".[tf215,audit]"' in row["status"]


def test_chunk_ratios_compare_batches_of_the_same_kind():
  # In a child process: the benchmark's absl flags (--steps...) would clash
  # with other experiments' in this one.
  script = """
import json, sys
from experiments import benchmark_clipping
rows = json.loads(sys.stdin.read())
benchmark_clipping._add_chunk_ratios(rows)
print(json.dumps(rows))
"""
  parameters = 2**28  # Gradients of 1 GiB.

  def ratios(rows):
    rows = [dict(model="m", config=config, status="ok",
                 parameters=parameters, seconds_per_step=seconds,
                 peak_rss_gib=rss) for config, seconds, rss in rows]
    result = subprocess.run([sys.executable, "-c", script],
                            input=json.dumps(rows), capture_output=True,
                            text=True, cwd=ROOT, timeout=120, check=True)
    return {row["config"]: row for row in json.loads(result.stdout)}

  rows = ratios([("tfdp", 1.0, 9.0), ("tfdp_dynamic", 2.0, 9.0),
                 ("tfdp_quarter", 0.3, 3.0), ("tfdp_quarter_dynamic", 0.6, 4.0),
                 ("tfdp_chunks4", 1.1, 4.4), ("tfdp_chunks4_dynamic", 2.4, 6.0)])
  static, dynamic = rows["tfdp_chunks4"], rows["tfdp_chunks4_dynamic"]
  assert static["chunk_time_ratio"] == pytest.approx(1.1)
  assert static["chunk_memory_ratio"] == pytest.approx(4.4 / (3.0 + 1.0))
  assert dynamic["chunk_time_ratio"] == pytest.approx(1.2)
  assert dynamic["chunk_memory_ratio"] == pytest.approx(6.0 / (4.0 + 1.0))
  # Without its own kind's references a row gets no ratio.
  rows = ratios([("tfdp", 1.0, 9.0), ("tfdp_quarter", 0.3, 3.0),
                 ("tfdp_chunks4_dynamic", 2.4, 6.0)])
  assert "chunk_time_ratio" not in rows["tfdp_chunks4_dynamic"]
  assert "chunk_memory_ratio" not in rows["tfdp_chunks4_dynamic"]
