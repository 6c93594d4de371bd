"""Every mutation of tests/mutation_check.py still applies to the tree.

The mutation check runs on demand (minutes per mutation); this cheap test
keeps a refactor from silently leaving one of its texts unmatched.
"""

import pathlib

import pytest

from tests import mutation_check

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mutation", mutation_check.MUTATIONS,
                         ids=lambda mutation: mutation.name)
def test_the_mutated_text_occurs_once(mutation):
  text = (ROOT / mutation.path).read_text()
  assert text.count(mutation.old) == 1, (
      f"{mutation.name}: {mutation.old!r} occurs {text.count(mutation.old)} "
      f"times in {mutation.path}")
  for test in mutation.tests:
    assert (ROOT / test.split("::")[0]).exists(), test
