"""What Gradescope and PrairieLearn document for their result files, as checks the LMS tests share."""

from __future__ import annotations

import json
import math

from grader.lms.prairielearn import SIZE_LIMIT

GS_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
GS_FORMATS = {"text", "html", "simple_format", "md", "ansi"}
GS_TOP = {
    "score", "execution_time", "output", "output_format", "test_output_format", "test_name_format", "visibility",
    "stdout_visibility", "extra_data", "tests", "leaderboard",
}  # fmt: skip
GS_TEST = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags", "visibility", "extra_data"}
PL_TOP = {"gradable", "score", "message", "output", "format_errors", "tests", "images"}
PL_TEST = {"name", "description", "points", "max_points", "message", "output", "images"}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def assert_gradescope_results(payload: dict) -> None:
    """``results.json`` as Gradescope's spec describes it (types, allowed values, bounds)."""
    assert set(payload) <= GS_TOP, set(payload) - GS_TOP
    assert _number(payload["score"]) and payload["score"] >= 0
    assert isinstance(payload.get("output", ""), str)
    for key in ("output_format", "test_output_format", "test_name_format"):
        assert payload.get(key, "text") in GS_FORMATS
    for key in ("visibility", "stdout_visibility"):
        assert payload.get(key, "visible") in GS_VISIBILITY
    if "execution_time" in payload:
        assert _number(payload["execution_time"])
    assert isinstance(payload.get("extra_data", {}), dict)
    assert isinstance(payload["tests"], list)
    for test in payload["tests"]:
        assert set(test) <= GS_TEST, set(test) - GS_TEST
        if "score" in test or "max_score" in test:  # a test without scores is informational
            assert _number(test["score"]) and _number(test["max_score"]) and 0 <= test["score"] <= test["max_score"]
        assert test.get("status", "passed") in ("passed", "failed")
        assert isinstance(test["name"], str) and isinstance(test["number"], str) and isinstance(test["output"], str)
        assert test.get("visibility", "visible") in GS_VISIBILITY
        assert all(isinstance(tag, str) for tag in test.get("tags", []))
    for entry in payload.get("leaderboard", []):
        assert set(entry) <= {"name", "value", "order"} and isinstance(entry["name"], str)
        assert _number(entry["value"]) or isinstance(entry["value"], str)
        assert entry.get("order", "desc") in ("asc", "desc")
    scored = [t for t in payload["tests"] if "score" in t]
    if scored and payload["score"] > 0:
        assert abs(payload["score"] - sum(t["score"] for t in scored)) < 1e-9


def assert_prairielearn_results(raw: bytes) -> dict:
    """``results.json`` as PrairieLearn's external-grading docs describe it."""
    assert len(raw) < SIZE_LIMIT
    payload = json.loads(raw)
    assert set(payload) <= PL_TOP, set(payload) - PL_TOP
    assert isinstance(payload["gradable"], bool)
    assert _number(payload["score"]) and 0 <= payload["score"] <= 1
    for key in ("message", "output"):
        assert isinstance(payload.get(key, ""), str)
    if not payload["gradable"]:
        errors = payload["format_errors"]
        assert isinstance(errors, list) and errors and all(isinstance(e, str) and e for e in errors)
    for test in payload.get("tests", []):
        assert set(test) <= PL_TEST
        assert isinstance(test["name"], str) and isinstance(test["message"], str) and isinstance(test["output"], str)
        assert _number(test["points"]) and _number(test["max_points"]) and 0 <= test["points"] <= test["max_points"]
    return payload
