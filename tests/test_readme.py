"""The README's two commands stay true: CI runs the same test command."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bash_blocks(text):
  return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_commands():
  """The first is the pinned stack's (TF 2.15.1), the second TF 2.21's."""
  readme = (ROOT / "README.md").read_text()
  test_commands = [b.strip() for b in _bash_blocks(readme) if "pytest" in b]
  assert len(test_commands) == 2
  assert "tf215" in test_commands[0] and "tf221" in test_commands[1]
  ci = (ROOT / ".ci" / "run").read_text()
  ci_lines = [line.strip() for line in ci.splitlines()]
  assert all(command in ci_lines for command in test_commands)
  assert "python3.11 -m venv" in ci


def test_readme_runs_the_quickstart_first():
  blocks = _bash_blocks((ROOT / "README.md").read_text())
  assert "python -m experiments.quickstart" in blocks[0]


def test_readme_python_example_runs(tmp_path, monkeypatch):
  (example,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md")
                          .read_text(), flags=re.S)
  assert "epochs = 20" in example
  monkeypatch.chdir(tmp_path)  # its TensorBoard logs go to ./runs/tour
  namespace = {}
  exec(compile(example.replace("epochs = 20", "epochs = 2"), "README.md",  # pylint: disable=exec-used
               "exec"), namespace)
  spent = namespace["accountant"].spent()
  assert spent.steps == 2 * namespace["batches"].steps_per_epoch
  assert 0 < spent.epsilon <= 3.0
  assert (tmp_path / "runs" / "tour" / "privacy").is_dir()


def test_public_data_docs_example_runs():
  """docs/public_data.md's first example: warm-up, augmult, DOPE, EMA."""
  example = re.findall(r"```python\n(.*?)```",
                       (ROOT / "docs" / "public_data.md").read_text(),
                       flags=re.S)[0]
  assert "epochs=5," in example
  namespace = {}
  exec(compile(example.replace("epochs=5,", "epochs=1,").replace(  # pylint: disable=exec-used
      "print(accountant.spent())", ""), "public_data.md", "exec"), namespace)
  spent = namespace["accountant"].spent()
  assert spent.steps == namespace["batches"].steps_per_epoch
  options = namespace["model"]._tfdp_options  # pylint: disable=protected-access
  assert options.augmult == 4 and options.public_gradient is not None


def test_model_inversion_docs_example_runs():
  """docs/model_inversion.md's example: a target, the attack, its judge."""
  (example,) = re.findall(r"```python\n(.*?)```",
                          (ROOT / "docs" / "model_inversion.md").read_text(),
                          flags=re.S)
  for long, short in [("epochs=10,", "epochs=1,"), ("steps=300", "steps=2"),
                      ("steps=200", "steps=2")]:
    assert long in example
    example = example.replace(long, short)
  namespace = {}
  exec(compile(example.replace("print(", "metrics = ("),  # pylint: disable=exec-used
               "model_inversion.md", "exec"), namespace)
  assert namespace["found"].images.shape == (50, 8, 8, 1)
  assert 0 <= namespace["metrics"]["top1"] <= 1


def test_distributed_docs_example_runs():
  """docs/distributed.md's code, on the default strategy (one process)."""
  (example,) = re.findall(r"```python\n(.*?)```",
                          (ROOT / "docs" / "distributed.md").read_text(),
                          flags=re.S)
  replaced = "tf.distribute.MultiWorkerMirroredStrategy()"
  assert replaced in example and "epochs=10," in example
  example = example.replace(replaced, "tf.distribute.get_strategy()").replace(
      "epochs=10,", "epochs=1,")
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfdp  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  namespace = {
      "tf": tf, "tfdp": tfdp, "noise_multiplier": 1.0,
      "x": rng.normal(size=(512, 4)).astype(np.float32),
      "y": rng.integers(0, 2, 512),
      "build_model": lambda: tf.keras.Sequential(
          [tf.keras.Input([4]), tf.keras.layers.Dense(2)])}
  exec(compile(example, "distributed.md", "exec"), namespace)  # pylint: disable=exec-used
  assert namespace["accountant"].steps == 2  # round(512 / 256) steps.
