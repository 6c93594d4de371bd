"""docs/robust.md's example runs (with fewer epochs)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_robust_md_example_runs():
  (example,) = re.findall(r"```python\n(.*?)```",
                          (ROOT / "docs" / "robust.md").read_text(),
                          flags=re.S)
  assert "epochs = 20" in example
  quick = (example.replace("epochs = 20", "epochs = 1")
           .replace("steps=20", "steps=2").replace("steps=5", "steps=1"))
  namespace = {}
  exec(compile(quick, "robust.md", "exec"), namespace)  # pylint: disable=exec-used
  assert 0 <= namespace["pgd"] <= namespace["clean"] <= 1
  assert namespace["clean"] > 0.3
  assert namespace["spent"].steps == namespace["batches"].steps_per_epoch
  assert 0 < namespace["spent"].epsilon < 10
