r"""Collects stobatch_mnist runs into the tables of docs/stobatch.md.

Reads RUN/results.json for each run directory given (or matched by a glob)
and writes one markdown file: per dataset and epsilon, conventional
accuracy, certified accuracy per kappa, robust accuracy per attack and
kappa, and the empirical soundness counts, with each run's command.

  python -m experiments.stobatch_tables \
      --runs='docs/results/stobatch/*' --output=docs/results/stobatch/tables.md

docs/results/stobatch/run_all.sh makes the runs.
"""

import glob
import json
import os
from typing import Any, Dict, List

from absl import app
from absl import flags

from experiments import _report

RUNS = flags.DEFINE_list("runs", None,
                         "Run directories or globs (each with results.json).")
OUTPUT = flags.DEFINE_string("output", None, "Markdown file to write.")


def _load(patterns: List[str]) -> List[Dict[str, Any]]:
  paths = sorted({p for pattern in patterns for p in glob.glob(pattern)
                  if os.path.isfile(os.path.join(p, "results.json"))})
  if not paths:
    raise app.UsageError(f"--runs matched no directory with results.json: "
                         f"{patterns}")
  runs = []
  for path in paths:
    with open(os.path.join(path, "results.json")) as f:
      runs.append(dict(json.load(f), path=path))
  return sorted(runs, key=lambda r: (r["dataset"], r["epsilon"],
                                     r["epsilon_ae"],
                                     r["evaluation"]["norm"]))


def _epsilon(run: Dict[str, Any]) -> str:
  return (f"{run['epsilon']:g} = {run['epsilon_ae']:g} + "
          f"{run['epsilon_out']:g}")


def _row(run: Dict[str, Any]) -> Dict[str, Any]:
  result = run["evaluation"]
  row = {"dataset": run["dataset"], "epsilon (ae + out)": _epsilon(run),
         "m": run["batch_size"], "steps": run["steps"],
         "test examples": result["examples"],
         "norm, inference noise": f"L-{result['norm']}, {_report.inference_noise(result)}",
         "conventional": result["conventional_accuracy"],
         "no input noise": result["base_accuracy"]}
  for kappa, value in result["certified_accuracy"].items():
    row[f"certified k={kappa}"] = value
  return row


def _robust_rows(run: Dict[str, Any]) -> List[Dict[str, Any]]:
  result = run["evaluation"]
  rows = []
  for attack, by_kappa in result["robust_accuracy"].items():
    row = {"dataset": run["dataset"], "epsilon (ae + out)": _epsilon(run),
           "norm": f"L-{result['norm']}", "attack": attack}
    row.update({f"k={k}": v for k, v in by_kappa.items()})
    rows.append(row)
  row = {"dataset": run["dataset"], "epsilon (ae + out)": _epsilon(run),
         "norm": f"L-{result['norm']}",
         "attack": "certified / flipped by PGD"}
  row.update({f"k={k}": f"{v['certified']} / {v['flipped']}"
              for k, v in result["soundness"].items()})
  rows.append(row)
  return rows


def _groups(runs: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
  """Runs sharing their kappas (one table each), in order of appearance."""
  groups: Dict[tuple, List[Dict[str, Any]]] = {}
  for run in runs:
    key = tuple(run["evaluation"]["certified_accuracy"])
    groups.setdefault(key, []).append(run)
  return list(groups.values())


def tables(runs: List[Dict[str, Any]]) -> str:
  """The markdown: accuracy table, robust table, commands."""
  evaluation = runs[0]["evaluation"]
  lines = [
      "# StoBatch result tables", "",
      f"Votes: {evaluation['num_samples']} draws of the inference noise "
      f"on the input (its scale b: the training input-noise scale unless "
      f"the command sets "
      f"--inference_noise_scale); certificates and attacks in the norm "
      f"given (pixels in [-1, 1]), confidence {1 - evaluation['alpha']:g}.",
      "",
      "## Conventional and certified accuracy", ""]
  groups = _groups(runs)
  for group in groups:
    lines += [_report.markdown_table([_row(r) for r in group]), ""]
  lines += ["## Robust accuracy (correct both clean and attacked)", ""]
  for group in groups:
    lines += [_report.markdown_table(
        [row for r in group for row in _robust_rows(r)]), ""]
  lines += ["## Commands", ""]
  lines += [f"* `{_command(r)}`" for r in runs]
  return "\n".join(lines) + "\n"


def _command(run) -> str:
  """The run's command; older runs recorded `SCRIPT.py ARGS`."""
  command = run["command"]
  if command.startswith("python -m "):
    return command
  return "python -m experiments." + command.replace(".py", "", 1)


def main(argv):
  del argv
  if not RUNS.value or not OUTPUT.value:
    raise app.UsageError("--runs and --output are required")
  text = tables(_load(RUNS.value))
  with open(OUTPUT.value, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
