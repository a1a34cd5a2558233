"""lab-05's wrong files are the bug alone: patches against the current solution, each applying and
each naming what it must fail (an ``# expect:`` check, or an ``# ignores-inputs:`` function).
That none repeats more than half of the solution is tests/test_labs.py's, for every lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import patch
from grader.selftest import expectations, ignoring, materialize

LAB05 = Path(__file__).resolve().parents[2] / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-05-fused-moe-kernel"
WRONG = sorted((LAB05 / "wrong").iterdir())


def test_every_wrong_file_is_a_patch() -> None:
    assert WRONG and all(p.suffix == ".patch" for p in WRONG), [p.name for p in WRONG if p.suffix != ".patch"]


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.name)
def test_a_wrong_file_applies_and_names_what_it_must_fail(path: Path) -> None:
    text = path.read_text()
    solution = (LAB05 / "solution.py").read_text()
    assert expectations(text) or ignoring(text), "names no check and no function"
    assert text.splitlines()[0].startswith(("# expect: ", "# ignores-inputs: "))
    diff = patch.parse(text)
    assert text.count("\n--- solution.py\n+++ wrong/" + path.stem + ".py\n") == 1
    assert all(line.startswith("# ") for line in diff.preamble)
    applied = materialize(path, LAB05).data.decode()
    assert applied != solution
