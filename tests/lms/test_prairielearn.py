"""PrairieLearn end to end: ``grader lms prairielearn run`` in a folder laid out like PrairieLearn's
external-grading container (``student/``, ``results/``), checked against PrairieLearn's
documented ``results.json`` (score in [0, 1], ``gradable``/``format_errors``, tests, 1 MB)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lms_rules import assert_prairielearn_results
from support import LAB01, tight_limits, wrong_file

from grader.lms.prairielearn import PrairieLearnFormat
from grader.results import GradeResult
from grader.sandbox.tiers import probe


@pytest.fixture
def grade_root(make_lab, tmp_path: Path) -> Path:
    make_lab(edit=tight_limits)
    root = tmp_path / "grade"
    (root / "student").mkdir(parents=True)
    return root


def run(run_cli, root: Path, *extra: str) -> tuple[int, dict, str]:
    code, out, err = run_cli("lms", "prairielearn", "run", "--exercise", "lab-01", "--root", root, *extra)
    return code, assert_prairielearn_results((root / "results" / "results.json").read_bytes()), out


def needs_bwrap() -> None:
    if probe().mode != "bubblewrap":
        pytest.skip("official grading needs bubblewrap")


def test_correct_submission_scores_one(run_cli, grade_root: Path) -> None:
    needs_bwrap()
    shutil.copy(LAB01 / "solution.py", grade_root / "student" / "moe.py")
    code, payload, out = run(run_cli, grade_root)
    assert code == 0
    assert payload["gradable"] is True and payload["score"] == 1.0
    assert len(payload["tests"]) == 8 and sum(t["max_points"] for t in payload["tests"]) == 10
    assert "Score: 10 / 10" in out


def test_wrong_submission_scores_a_fraction(run_cli, grade_root: Path) -> None:
    needs_bwrap()
    (grade_root / "student" / "moe.py").write_text(wrong_file("smallest_logits"))
    code, payload, _ = run(run_cli, grade_root)
    assert code == 0 and payload["gradable"] is True and 0 < payload["score"] < 1
    route = next(t for t in payload["tests"] if t["name"] == "route-matches-reference")
    assert route["points"] == 0 and route["max_points"] == 2 and "expected" in route["output"]


def test_hostile_submission_is_graded_zero(run_cli, grade_root: Path) -> None:
    needs_bwrap()
    (grade_root / "student" / "moe.py").write_text(
        'import sys\nprint(\'{"gradable": true, "score": 1.0}\')\nsys.exit(0)\n'
    )
    code, payload, _ = run(run_cli, grade_root)
    assert code == 0 and payload["gradable"] is True and payload["score"] == 0
    assert all(t["points"] == 0 for t in payload["tests"])


def test_no_upload_is_not_gradable_and_uses_no_attempt(run_cli, grade_root: Path) -> None:
    code, payload, _ = run(run_cli, grade_root)
    assert code == 0  # PrairieLearn reads results.json only after the container exits 0
    assert payload["gradable"] is False and payload["score"] == 0
    assert payload["format_errors"] == ["your upload: no Python file (.py) or notebook (.ipynb) to grade"]
    assert "tests" not in payload


def test_missing_isolation_is_an_infrastructure_error(run_cli, grade_root: Path, weak_process_tier) -> None:
    shutil.copy(LAB01 / "solution.py", grade_root / "student" / "moe.py")
    code, payload, out = run(run_cli, grade_root, "--sandbox", "process")
    assert code == 0
    assert payload["gradable"] is False  # no attempt is used for the course's own problem
    assert "course's side" in payload["format_errors"][0] and "bubblewrap" not in json.dumps(payload)
    assert "infrastructure problem" in out  # the reason is in the instructors' log


def test_misconfigured_exercise_still_writes_a_valid_file(run_cli, grade_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADE_ROOT", str(grade_root))  # the root comes from the environment too
    code, out, err = run_cli("lms", "prairielearn", "run", "--exercise", "lab-99")
    payload = assert_prairielearn_results((grade_root / "results" / "results.json").read_bytes())
    assert code == 0
    assert payload["gradable"] is False and "course's side" in payload["format_errors"][0]
    assert "unknown exercise 'lab-99'" in out


def test_payload_scales_hides_and_fits_under_one_megabyte(synthetic: GradeResult) -> None:
    payload = PrairieLearnFormat().payload(synthetic)
    raw = json.dumps(payload).encode()
    payload = assert_prairielearn_results(raw)
    tests = {t["name"]: t for t in payload["tests"]}
    assert set(tests) == {"a-passes", "b-fails"}  # hidden, after-due-date and pending checks are not shown
    assert payload["score"] == 0.8  # 4 of the 5 points graded on upload
    assert "boom" not in raw.decode() and "secret cases" not in raw.decode()
    assert "5 more points come from checks graded later" in payload["output"]

    huge = synthetic.model_copy(deep=True)
    for check in huge.checks:
        check.message = "x" * 400_000
        check.visibility = check.visibility.visible
        check.deferred = False
    huge.submission_output = "y" * 2_000_000
    raw = json.dumps(PrairieLearnFormat().payload(huge), indent=2).encode()
    payload = assert_prairielearn_results(raw)
    assert len(payload["tests"]) == 5 and "more characters cut" in payload["tests"][0]["output"]
