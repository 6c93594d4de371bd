r"""One table and plot of DP + certified robustness across methods (issue 11).

Reads the results.json of finished runs of experiments.stobatch_mnist (and
stobatch_cifar10), experiments.securesgd_tinyimagenet and
experiments.dp_smoothing, puts their radii in one unit (L2, pixels in
[0, 1]: the StoBatch and SecureSGD models see pixels in [-1, 1], so their
kappas are halved) and writes --output_dir/table.md and
--output_dir/certified_accuracy.png (certified accuracy against radius, one
line per run). Trains nothing.

  python -m experiments.robustness_table \
      --stobatch=runs/sb_eps1,runs/sb_eps2 --dp_smoothing=runs/dps_eps2 \
      --output_dir=docs/results/issue11
"""

import json
import os
from typing import Any, Dict, List

from absl import app
from absl import flags

from experiments import _report

STOBATCH = flags.DEFINE_list(
    "stobatch", [], "Result directories of experiments.stobatch_* runs.")
SECURESGD = flags.DEFINE_list(
    "securesgd", [],
    "Result directories of experiments.securesgd_tinyimagenet runs.")
DP_SMOOTHING = flags.DEFINE_list(
    "dp_smoothing", [], "Result directories of experiments.dp_smoothing runs.")
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "runs/robustness_table",
    "Where table.md and certified_accuracy.png go.")


def _read(directory: str) -> Dict[str, Any]:
  path = os.path.join(directory, "results.json")
  if not os.path.exists(path):
    raise app.UsageError(f"no results.json in {directory!r}")
  with open(path) as f:
    return json.load(f)


def _radius(kappa: str) -> str:
  """A kappa in model units (pixels in [-1, 1]) as a radius in [0, 1] units."""
  return f"{float(kappa) / 2:g}"


def _pixeldp_run(method: str, run: Dict[str, Any]) -> Dict[str, Any]:
  """A StoBatch or SecureSGD run (kappas in [-1, 1] units, votes' PGD)."""
  evaluation = run["evaluation"]
  delta = run.get("delta", 0.0)
  return {
      "method": method,
      "epsilon": f"{run['epsilon']:.3g}" + (f" (delta {delta:g})"
                                            if delta else " (pure)"),
      "certificate": (f"L-{evaluation['norm']}, "
                      f"{_report.inference_noise(evaluation)}"),
      "f accuracy": evaluation["base_accuracy"],
      "deployed accuracy": evaluation["conventional_accuracy"],
      "certified": {_radius(k): v for k, v in
                    evaluation["certified_accuracy"].items()},
      "pgd": {_radius(k): v for k, v in
              evaluation["robust_accuracy"]["pgd"].items()},
      "soundness": {_radius(k): (v["certified"], v["flipped"])
                    for k, v in evaluation["soundness"].items()},
      "command": "python -m experiments." + run["command"].replace(".py", "",
                                                                  1),
  }


def _smoothing_run(run: Dict[str, Any]) -> Dict[str, Any]:
  evaluation = run["evaluation"]
  return {
      "method": f"DP-SGD + smoothing, sigma {evaluation['sigma']:g}",
      "epsilon": f"{run['epsilon']:.3g} (delta {run['delta']:g})",
      "certificate": f"L-2, N(0, {evaluation['sigma']:g}^2), smoothing",
      "f accuracy": run["base_test_accuracy"],
      "deployed accuracy": evaluation["accuracy"],
      "certified": evaluation["certified_accuracy"],
      "pgd": {r: v["accuracy"] for r, v in evaluation["pgd"].items()},
      "soundness": {r: (v["certified"], v["flipped"])
                    for r, v in evaluation["pgd"].items()},
      "command": run["settings"]["command"],
  }


def collect() -> List[Dict[str, Any]]:
  """The runs the flags name, in one format."""
  runs = [_pixeldp_run("StoBatch", _read(d)) for d in STOBATCH.value]
  runs += [_pixeldp_run("SecureSGD", _read(d)) for d in SECURESGD.value]
  runs += [_smoothing_run(_read(d)) for d in DP_SMOOTHING.value]
  if not runs:
    raise app.UsageError(
        "name at least one run: --stobatch, --securesgd or --dp_smoothing")
  return runs


def _radii(runs: List[Dict[str, Any]]) -> List[str]:
  radii = {r for run in runs for r in run["certified"]}
  return sorted(radii, key=float)


def table(runs: List[Dict[str, Any]]) -> str:
  """Accuracy, certified and PGD accuracy per radius, soundness counts."""
  radii = _radii(runs)
  rows = []
  for run in runs:
    row = {key: run[key] for key in ("method", "epsilon", "f accuracy",
                                     "deployed accuracy")}
    row.update({f"cert. {r}": run["certified"].get(r, "-") for r in radii})
    row.update({f"PGD {r}": run["pgd"].get(r, "-") for r in radii})
    row["certified / flipped"] = ", ".join(
        "{}/{}".format(*run["soundness"][r]) if r in run["soundness"]
        else "-" for r in radii)
    rows.append(row)
  return _report.markdown_table(rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runs = collect()
  lines = [
      "# DP and certified robustness on one scale", "",
      "Radii: L2, pixels in [0, 1] (StoBatch's and SecureSGD's kappas, in "
      "[-1, 1] units, halved). f accuracy: the network without inference "
      "noise; deployed: the noisy classifier's vote (StoBatch, SecureSGD: "
      "expected vote; smoothing: PREDICT, abstentions wrong). PGD: accuracy "
      "of the deployed classifier, right both on the point and on its L2 "
      "PGD example of that radius. Certified / flipped: per radius, points "
      "certified at it and those whose PGD example changes the vote (0 "
      "expected).", "",
      table(runs), "",
      "![certified accuracy against radius](certified_accuracy.png)", "",
      "Certificates and commands:", ""]
  lines += [f"* {r['method']}, epsilon {r['epsilon']}: {r['certificate']}; "
            f"`{r['command']}`" for r in runs]
  os.makedirs(OUTPUT_DIR.value, exist_ok=True)
  with open(os.path.join(OUTPUT_DIR.value, "table.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  _report.plot_curves(
      {f"{r['method']}, eps {r['epsilon']}":
       {0.0: r["deployed accuracy"],
        **{float(k): v for k, v in r["certified"].items()}} for r in runs},
      os.path.join(OUTPUT_DIR.value, "certified_accuracy.png"),
      xlabel="L2 radius (pixels in [0, 1])",
      ylabel="certified accuracy (radius 0: deployed accuracy)",
      title="MNIST-8k: certified accuracy against radius")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
