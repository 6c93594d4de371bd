"""absl-flagged experiment scripts: python -m experiments.NAME --flags."""
