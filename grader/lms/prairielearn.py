"""PrairieLearn external grading: ``results.json`` in PrairieLearn's format, and the container run.

PrairieLearn mounts the upload at ``/grade/student/`` and reads ``/grade/results/results.json``
(the grader creates the folder): ``score`` in [0, 1], ``gradable: false`` with
``format_errors`` when the upload cannot be graded (no attempt is used up), and ``tests`` with
``points`` and ``max_points``. The whole file must stay under 1 MB, so outputs are cut to fit.
PrairieLearn shows every test to the student, so checks whose visibility is not ``visible``
keep their points but not their details.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grader.lms.base import LmsFormat
from grader.lms.gradescope import check_output
from grader.results import GradeResult, Visibility
from grader.text import printable

ROOT_ENV = "GRADE_ROOT"
DEFAULT_ROOT = Path("/grade")
SIZE_LIMIT = 1_000_000
"""PrairieLearn rejects a results.json over 1 MB."""
BUDGET = 900_000
"""What this format aims for, to stay clear of the limit."""


def _clip(text: str, limit: int) -> str:
    text = printable(text)
    return text if len(text) <= limit else text[: max(0, limit - 40)] + f"\n... ({len(text) - limit + 40} more characters cut)"


class PrairieLearnFormat(LmsFormat):
    """PrairieLearn's ``results.json`` (docs: externalGrading.md, "Grading results")."""

    name = "prairielearn"
    filename = "results.json"

    def payload(self, result: GradeResult) -> dict[str, Any]:
        tests = []
        for check in result.checks:
            shown = check.visibility is Visibility.visible
            tests.append(
                {
                    "name": check.id,
                    "description": check.title,
                    "points": float(check.score),
                    "max_points": float(check.max_score),
                    "message": _clip(check.message, 2000) if shown else "details are hidden until grades are released",
                    "output": check_output(check) if shown else "",
                }
            )
        fraction = result.score / result.max_score if result.max_score else 0.0
        summary = f"{result.exercise}: {result.score:g} / {result.max_score:g} ({result.percent:.0f}%)"
        output = [summary]
        if result.sandbox.degraded:
            output.append("graded without full isolation: " + "; ".join(result.sandbox.warnings))
        if result.submission_output.strip() and all(c.visibility is Visibility.visible for c in result.checks):
            output += ["", "What your code printed (last lines):", result.submission_output.strip()]
        payload: dict[str, Any] = {
            "gradable": result.gradable,
            "score": min(1.0, max(0.0, round(fraction, 6))) if result.gradable else 0.0,
            "message": summary if result.gradable else f"Not graded: {_clip(result.error or '', 2000)}",
            "output": "\n".join(output),
            "tests": tests,
        }
        if not result.gradable:
            # Not graded: no attempt is used, so per-test zeros would only mislead.
            payload["format_errors"] = [_clip(result.error or "the grader failed", 2000)]
            payload["output"] = _clip(result.error or "", 2000)
            del payload["tests"]
        return fit(payload)

    def error_payload(self, reason: str) -> dict[str, Any]:
        reason = _clip(reason, 2000)
        return {"gradable": False, "score": 0.0, "message": f"Not graded: {reason}", "format_errors": [reason]}


def _size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8"))


def fit(payload: dict[str, Any], budget: int = BUDGET) -> dict[str, Any]:
    """Cut outputs (the longest first, then everything) until the file is within ``budget`` bytes."""
    for limit in (16000, 4000, 1000, 200, 0):
        if _size(payload) <= budget:
            return payload
        payload["output"] = _clip(payload.get("output", ""), limit * 4)
        for test in payload.get("tests", []):
            test["output"] = _clip(test.get("output", ""), limit)
            test["message"] = _clip(test.get("message", ""), max(limit, 200))
    if _size(payload) > budget:  # only a pathological number of checks gets here
        payload["tests"] = payload.get("tests", [])[: max(1, len(payload.get("tests", [])) // 4)]
        payload["output"] = "(cut to fit PrairieLearn's 1 MB limit)"
    return payload
