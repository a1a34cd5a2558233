"""lab-05's wrong files are the bug alone: patches against the current solution, each applying,
each naming what it must fail, none repeating more than half of the solution."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import patch
from grader.selftest import expectations, materialize

LAB05 = Path(__file__).resolve().parents[2] / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-05-fused-moe-kernel"
WRONG = sorted((LAB05 / "wrong").iterdir())


def test_every_wrong_file_is_a_patch() -> None:
    assert WRONG and all(p.suffix == ".patch" for p in WRONG), [p.name for p in WRONG if p.suffix != ".patch"]


@pytest.mark.parametrize("path", WRONG, ids=lambda p: p.name)
def test_a_wrong_file_applies_and_repeats_at_most_half_of_the_solution(path: Path) -> None:
    text = path.read_text()
    solution = (LAB05 / "solution.py").read_text()
    assert expectations(text), "names no check"
    assert text.splitlines()[0].startswith("# expect: ")
    diff = patch.parse(text)
    assert text.count("\n--- solution.py\n+++ wrong/" + path.stem + ".py\n") == 1
    assert all(line.startswith("# ") for line in diff.preamble)
    applied = materialize(path, LAB05).data.decode()
    assert applied != solution
    solution_lines = {line for line in solution.splitlines() if line.strip()}
    repeated = sum(1 for line in text.splitlines() if line[1:] in solution_lines and line[:1] in " -")
    assert repeated <= len(solution_lines) / 2, f"{repeated} solution lines repeated"
