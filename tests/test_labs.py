"""Every lab proves its checkers: solution and accepted files full marks, starter 0, wrong files
fail what they name, and every check is failed by some wrong file. Known files show only their
difference from the solution (a patch, or a genuinely different file), so they cannot drift."""

from __future__ import annotations

import io

import pytest
from support import LAB01

from grader import discovery
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.selftest import ignoring, known_files, run_selftest
from grader.session import GradingOptions

LABS = discovery.find_labs()


def test_labs_are_found() -> None:
    assert "lab-01-moe-routing" in LABS


@pytest.mark.parametrize("lab_id", sorted(LABS))
def test_selftest(lab_id: str) -> None:
    out = io.StringIO()
    manifest = load_manifest(LABS[lab_id], default_plugins().checkers())
    ok = run_selftest(manifest, GradingOptions(), default_plugins(), out)
    assert ok, out.getvalue()
    text = out.getvalue()
    assert "FAIL" not in text
    assert "every check is failed by at least one wrong file" in text


def _code_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def shared_with_solution(text: str, solution: str) -> float:
    """The non-blank lines of ``text`` that also occur in ``solution``, over the solution's
    non-blank lines (whitespace ignored, so a re-indented copy or a patch's context counts)."""
    known = set(_code_lines(solution))
    return sum(line in known for line in _code_lines(text)) / len(_code_lines(solution))


def test_the_measure_sees_a_copy_with_one_line_changed() -> None:
    solution = (LABS["lab-01-moe-routing"].parent / "solution.py").read_text(encoding="utf-8")
    copy = solution.replace("np.maximum(x @ w1, 0.0) @ w2", "(x @ w1) @ w2")
    assert 0.9 < shared_with_solution(copy, solution) < 1.0
    assert shared_with_solution("import numpy as np\n\ndef route(x, w_gate, k):\n    pass\n", solution) < 0.1


@pytest.mark.parametrize("lab_id", sorted(LABS))
def test_known_files_do_not_repeat_the_solution(lab_id: str) -> None:
    """No file under wrong/ or accepted/ repeats more than half of solution.py: a long file that
    differs in a few lines is stored as a .patch, which the self-test applies to the solution."""
    lab_dir = LABS[lab_id].parent
    solution = (lab_dir / "solution.py").read_text(encoding="utf-8")
    known = [p for folder in ("wrong", "accepted") for p in sorted((lab_dir / folder).rglob("*")) if p.is_file()]
    copies = {
        str(p.relative_to(lab_dir)): round(share, 2)
        for p in known
        if (share := shared_with_solution(p.read_text(encoding="utf-8", errors="replace"), solution)) > 0.5
    }
    assert not copies, f"these files repeat more than half of {lab_id}'s solution.py (store them as patches): {copies}"


@pytest.mark.parametrize("lab_id", sorted(LABS))
def test_every_function_has_an_input_ignoring_wrong_file(lab_id: str) -> None:
    """Each function of each lab has a wrong file whose version of it ignores its inputs; the
    self-test then proves it scores 0 on all of that function's checks. A function without
    arguments (lab-02's predict, a guess written down before looking) has no inputs to ignore:
    a fixed answer is all it can give, and its checks grade that answer's form."""
    manifest = load_manifest(LABS[lab_id], default_plugins().checkers())
    shown = {f for p in known_files(manifest.directory, "wrong") for f in ignoring(p.read_text(encoding="utf-8"))}
    missing = sorted(f for f in set(manifest.functions) - shown if manifest.functions[f].args)
    assert not missing, f"{lab_id}: no wrong file with '# ignores-inputs: FUNCTION' for {missing}"


# The route-weights check as it once was: bookkeeping laws that hold for ids 0..k-1 with
# uniform weights, whatever x and w_gate hold.
FORMAT_ONLY_CHECK = """[checks.route-weights-are-a-distribution]
kind = "conservation"
title = "each token's combine weights are k distinct experts' shares summing to 1"
function = "route"
points = 1
cases = "route"
rules = [
  { rule = "in_range", output = "topk_ids", low = 0, high = "E" },
  { rule = "distinct_in_rows", output = "topk_ids" },
  { rule = "nonnegative", output = "topk_weights" },
  { rule = "rows_sum_to", output = "topk_weights", value = 1.0, atol = 1e-5 },
]

"""


def test_selftest_fails_a_check_that_an_input_ignoring_function_passes(make_lab) -> None:
    def edit(text: str) -> str:
        start = text.index("[checks.route-weights-are-a-distribution]")
        return text[:start] + FORMAT_ONLY_CHECK + text[text.index("[checks.expert-mlp-matches-reference]") :]

    lab = make_lab(LAB01, edit=edit)
    out = io.StringIO()
    ok = run_selftest(load_manifest(lab, default_plugins().checkers()), GradingOptions(), default_plugins(), out)
    text = out.getvalue()
    assert not ok, text
    failures = [line for line in text.splitlines() if "FAIL" in line]
    assert len(failures) == 1, text
    assert "wrong/route_ignores_inputs.patch" in failures[0]
    assert "route ignores its inputs, yet earns points: route-weights-are-a-distribution (passed, 1)" in failures[0]
