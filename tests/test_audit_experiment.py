"""experiments.audit end to end on digits, at a tiny scale."""

import json
import pathlib
import subprocess
import sys

from tfdp import privacy
from tfdp.audit import membership

# TF Privacy's membership tools import on TensorFlow 2.15 only.
MEMBERSHIP_TOOLS = membership.missing_privacy_tests() is None

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ("--claimed_epsilons=2", "--runs_per_side=60", "--canaries=100",
        "--blackbox_canaries=40", "--epochs=1", "--lira_shadows=2",
        "--nonprivate_epochs=3", "--mode=both", "--negative_controls=no_noise",
        "--control_epsilon=1.5", "--audit_steps=6")
BLACK_BOX_ONLY = ("--mode=blackbox", "--negative_controls=", "--nomembership",
                  "--claimed_epsilons=2", "--blackbox_canaries=40")


def _audit(tmp_path, *args):
  """Runs the experiment; returns (results.json's path, its contents)."""
  result = subprocess.run(
      [sys.executable, "-m", "experiments.audit", *args,
       f"--output_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  (path,) = tmp_path.glob("audit/*/results.json")
  return path, json.loads(path.read_text())


def test_audit_writes_bounds_controls_and_membership(tmp_path):
  path, results = _audit(
      tmp_path, *TINY, *(() if MEMBERSHIP_TOOLS else ("--nomembership",)))
  assert results["settings"]["train"] == 1437
  methods = [(r["mode"], r["method"]) for r in results["audits"]]
  assert methods == [("whitebox", "many runs"), ("whitebox", "one run"),
                     ("blackbox", "one run")]
  for row in results["audits"] + results["negative_controls"]:
    # The claim is the accountant's epsilon for what ran.
    spent = privacy.compute_epsilon(
        row["noise_multiplier"], row["steps"], 1e-5,
        sampling_probability=row["sampling_probability"])
    assert abs(spent.epsilon - row["claimed_epsilon"]) < 1e-9
  for row in results["audits"]:
    assert 1.8 < row["claimed_epsilon"] <= 2.0
    assert 0.0 <= row["lower_bound"] < row["claimed_epsilon"]
  (control,) = results["negative_controls"]
  assert control["trainer"] == "dpsgd + no_noise"
  assert control["lower_bound"] > control["claimed_epsilon"]
  names = [r["model"] for r in results["membership"]]
  assert names == (["non-private", "DP eps=2"] if MEMBERSHIP_TOOLS else [])
  for row in results["membership"]:
    assert 0.0 <= row["mia_auc"] <= 1.0 and 0.0 <= row["lira_auc"] <= 1.0
  assert (path.parent / "audit.png").exists()
  assert "## Negative controls" in (path.parent / "results.md").read_text()


def test_dp_gan_is_audited_black_box_with_its_own_accountant(tmp_path):
  _, results = _audit(tmp_path, "--trainer=dp_gan", "--gan_audit_steps=20",
                      *BLACK_BOX_ONLY)
  (row,) = results["audits"]
  assert (row["trainer"], row["mode"], row["steps"]) == ("dp_gan",
                                                         "blackbox", 20)
  # The claim is the GAN accountant's: DP-SGD on D, 20 steps.
  spent = privacy.compute_epsilon(
      row["noise_multiplier"], 20, 1e-5,
      sampling_probability=row["sampling_probability"])
  assert abs(spent.epsilon - row["claimed_epsilon"]) < 1e-6
  assert 0.0 <= row["lower_bound"] < row["claimed_epsilon"]


def test_stobatch_is_audited_black_box_with_its_pure_epsilon(tmp_path):
  _, results = _audit(tmp_path, "--trainer=stobatch",
                      "--stobatch_audit_steps=2", *BLACK_BOX_ONLY)
  (row,) = results["audits"]
  assert (row["trainer"], row["steps"]) == ("stobatch", 2)
  # epsilon_ae + epsilon_out = 1 + 1, pure DP.
  assert abs(row["claimed_epsilon"] - 2.0) < 1e-9
  assert 0.0 <= row["lower_bound"] < 2.0


def test_dp_gan_refuses_what_is_wired_for_classifiers():
  result = subprocess.run(
      [sys.executable, "-m", "experiments.audit", "--trainer=dp_gan"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode != 0
  assert ("add --mode=blackbox --negative_controls= --nomembership"
          in result.stderr)
  assert "Traceback" not in result.stderr


def test_membership_without_tf_privacy_is_a_usage_error(tmp_path):
  """Where TF Privacy's tools do not import: one line, no traceback."""
  hidden = ("tensorflow_privacy.privacy.privacy_tests.membership_inference_"
            "attack.membership_inference_attack")
  code = ("import runpy, sys; "
          f"sys.modules[{hidden!r}] = None; "
          "sys.argv = ['audit', '--membership', "
          f"'--output_dir={tmp_path}']; "
          "runpy.run_module('experiments.audit', run_name='__main__')")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 1
  assert "--membership: " in result.stderr
  assert 'pip install -e ".[tf215,audit]"' in result.stderr
  assert "--nomembership" in result.stderr
  assert "Traceback" not in result.stderr
  assert not list(tmp_path.iterdir())  # Refused before anything is written.
