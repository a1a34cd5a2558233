"""PrairieLearn end to end: ``grader lms prairielearn run`` in a folder laid out like PrairieLearn's
external-grading container (``student/``, ``results/``), checked against PrairieLearn's
documented ``results.json`` (score in [0, 1], ``gradable``/``format_errors``, tests, 1 MB)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from grader.lms.prairielearn import SIZE_LIMIT, PrairieLearnFormat
from grader.results import GradeResult
from grader.sandbox.launchers import probe
from support import LAB01, tight_limits

TOP_FIELDS = {"gradable", "score", "message", "output", "format_errors", "tests", "images"}
TEST_FIELDS = {"name", "description", "points", "max_points", "message", "output", "images"}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def assert_prairielearn_results(raw: bytes) -> dict:
    assert len(raw) < SIZE_LIMIT
    payload = json.loads(raw)
    assert set(payload) <= TOP_FIELDS, set(payload) - TOP_FIELDS
    assert isinstance(payload["gradable"], bool)
    assert _number(payload["score"]) and 0 <= payload["score"] <= 1
    for key in ("message", "output"):
        assert isinstance(payload.get(key, ""), str)
    if not payload["gradable"]:
        errors = payload["format_errors"]
        assert isinstance(errors, list) and errors and all(isinstance(e, str) and e for e in errors)
    for test in payload.get("tests", []):
        assert set(test) <= TEST_FIELDS
        assert isinstance(test["name"], str) and isinstance(test["message"], str) and isinstance(test["output"], str)
        assert _number(test["points"]) and _number(test["max_points"]) and 0 <= test["points"] <= test["max_points"]
    return payload


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
    shutil.copy(LAB01 / "wrong" / "smallest_logits.py", grade_root / "student" / "moe.py")
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
    assert code == 2
    assert payload["gradable"] is False and payload["score"] == 0
    assert payload["format_errors"] == ["your upload: no Python (.py) file to grade"]
    assert "tests" not in payload


def test_missing_isolation_is_an_infrastructure_error(run_cli, grade_root: Path, weak_process_tier) -> None:
    shutil.copy(LAB01 / "solution.py", grade_root / "student" / "moe.py")
    code, payload, _ = run(run_cli, grade_root, "--sandbox", "process")
    assert code == 3
    assert payload["gradable"] is False
    assert "official grading needs the solutions, the secret seed and the network out of" in payload["format_errors"][0]


def test_misconfigured_exercise_still_writes_a_valid_file(run_cli, grade_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADE_ROOT", str(grade_root))  # the root comes from the environment too
    code, out, err = run_cli("lms", "prairielearn", "run", "--exercise", "lab-99")
    payload = assert_prairielearn_results((grade_root / "results" / "results.json").read_bytes())
    assert code == 3
    assert payload["gradable"] is False and "unknown exercise 'lab-99'" in payload["format_errors"][0]


def test_payload_scales_hides_and_fits_under_one_megabyte(synthetic: GradeResult) -> None:
    payload = PrairieLearnFormat().payload(synthetic)
    raw = json.dumps(payload).encode()
    payload = assert_prairielearn_results(raw)
    assert payload["score"] == 0.75
    tests = {t["name"]: t for t in payload["tests"]}
    assert tests["a-passes"]["points"] == 4 and tests["e-hidden"]["points"] == 3.5
    assert tests["c-errors"]["message"] == "details are hidden until grades are released"
    assert tests["c-errors"]["output"] == "" and "boom" not in raw.decode()

    huge = synthetic.model_copy(deep=True)
    for check in huge.checks:
        check.message = "x" * 400_000
        check.visibility = check.visibility.visible
    huge.submission_output = "y" * 2_000_000
    raw = json.dumps(PrairieLearnFormat().payload(huge), indent=2).encode()
    payload = assert_prairielearn_results(raw)
    assert len(payload["tests"]) == 5 and "more characters cut" in payload["tests"][0]["output"]
