"""PrairieLearn external grading, the whole platform: ``results.json`` in its format, its
container, its score upload, and ``grader lms prairielearn config``.

PrairieLearn mounts the upload at ``/grade/student/`` and reads ``/grade/results/results.json``
(the grader creates the folder): ``score`` in [0, 1], ``gradable: false`` with
``format_errors`` when the upload cannot be graded (no attempt is used up), and ``tests`` with
``points`` and ``max_points``. The whole file must stay under 1 MB, so outputs are cut to fit.
PrairieLearn shows every test to the student and has no release of its own, so only visible
checks graded on upload are in the file; hidden and GPU checks are added later as manual points.

PrairieLearn reads ``results.json`` only when the container exits 0, so its run always exits 0
once the file is written. An upload that holds no submission (nothing to grade, several
candidates, a file for another lab) is ``gradable: false`` with the reason in
``format_errors``: PrairieLearn's documented way to use no attempt on an invalid upload. A file
that is there but does not parse is graded (0 points, the line named), as everywhere.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

from grader.flags import positive
from grader.lms.base import LabLoader, LmsFormat
from grader.lms.container import TIMEOUT_ENV, Container
from grader.lms.gradescope import STUDENT_INFRA, check_output, clip
from grader.manifest import LabManifest
from grader.results import CheckResult, GradeResult, Problem, Visibility
from grader.text import printable

SIZE_LIMIT = 1_000_000
"""PrairieLearn rejects a results.json over 1 MB."""
BUDGET = 900_000
"""What this format aims for, to stay clear of the limit."""


def shown_on_upload(check: CheckResult) -> bool:
    """Whether PrairieLearn may show a check when the upload is graded. PrairieLearn shows every
    test it is given and releases nothing later, so a check that is not ``visible`` (hidden, after
    the due date, after publishing) or that waits for a GPU is left out of the upload's payload;
    its points reach PrairieLearn later as manual points (``grader lms prairielearn scores``)."""
    return check.visibility is Visibility.visible and not check.deferred


class PrairieLearnFormat(LmsFormat):
    """PrairieLearn's ``results.json`` (docs: externalGrading.md, "Grading results").

    ``score`` is the fraction of the points graded on upload (the question's ``autoPoints``);
    the rest (hidden and GPU checks) is the question's ``manualPoints``, uploaded later."""

    name = "prairielearn"
    label = "PrairieLearn"
    title = "PrairieLearn external grading"
    filename = "results.json"
    container = Container("GRADE_ROOT", "/grade", "student", "results/results.json", 30.0)
    defers_hidden = True
    score_header = ("uid", "instance", "qid", "manual_points", "feedback")

    def payload(self, result: GradeResult) -> dict[str, Any]:
        shown = [c for c in result.checks if shown_on_upload(c)]
        later = [c for c in result.checks if not shown_on_upload(c)]
        if not result.gradable:
            reason = (result.error or "nothing to grade") if result.problem is Problem.submission else STUDENT_INFRA
            reason = clip(reason, 2000)
            return {"gradable": False, "score": 0.0, "message": f"Not graded: {reason}", "format_errors": [reason]}
        tests = [
            {
                "name": check.id,
                "description": check.title,
                "points": float(check.score),
                "max_points": float(check.max_score),
                "message": clip(" ".join(check.message.split()), 2000),
                "output": check_output(check),
            }
            for check in shown
        ]
        earned = sum(c.score for c in shown)
        possible = sum(c.max_score for c in shown)
        summary = f"{result.exercise}: {earned:g} / {possible:g} points graded on upload"
        output = [summary, f"Graded file: {printable(result.submission, 200, False)}"]
        if result.helper_files:
            output.append("With your modules: " + ", ".join(printable(h, 100, False) for h in result.helper_files))
        if later:
            output.append(
                f"{sum(c.max_score for c in later):g} more points come from checks graded later "
                "(on the course's GPU machine, or hidden until the course releases them); the course staff adds them."
            )
        if result.submission_output.strip() and not later:
            output += ["", "What your code printed (last lines):", result.submission_output.strip()]
        payload: dict[str, Any] = {
            "gradable": True,
            "score": min(1.0, max(0.0, round(earned / possible, 6))) if possible else 0.0,
            "message": summary,
            "output": "\n".join(output),
            "tests": tests,
        }
        return fit(payload)

    def error_payload(self, reason: str) -> dict[str, Any]:
        return {"gradable": False, "score": 0.0, "message": f"Not graded: {STUDENT_INFRA}", "format_errors": [STUDENT_INFRA]}

    def exit_code(self, result: GradeResult | None) -> int:
        return 0  # PrairieLearn throws the file away after any other exit

    def add_score_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--qid", required=True, help="the question's id in PrairieLearn")
        parser.add_argument("--instance", type=positive, default=1, help="the assessment instance (default 1)")

    def score_rows(
        self, student: str, people: Sequence[Mapping[str, str]], points: float, feedback: list[str], args: argparse.Namespace
    ) -> list[list[str]]:
        """For "Upload new question scores": the uid is the email; a folder per student is named by it."""
        return [
            [p.get("email") or student, str(args.instance), args.qid, f"{points:g}", "; ".join(feedback)]
            for p in people or [{}]
        ]

    def add_commands(self, actions: argparse._SubParsersAction, lab: LabLoader) -> None:
        p = actions.add_parser("config", help="print the question's externalGradingOptions and points for a lab")
        p.add_argument("--exercise", "-e", required=True, help="lab id or unambiguous prefix")
        p.add_argument("--timeout", type=positive, default=30, help="the job's timeout in seconds (PrairieLearn's default: 30)")
        p.add_argument("--image", default="your-course/grader:latest", help="the grader's container image")
        p.set_defaults(handler=lambda args: self.config(args, lab(args.exercise)))

    def config(self, args: argparse.Namespace, manifest: LabManifest) -> int:
        """``grader lms prairielearn config``: the question's settings, its points split."""
        plan = self.plan(manifest)
        auto = sum(manifest.checks[c].points for c in plan["upload"])
        manual = manifest.max_score - auto
        options = {
            "enabled": True,
            "image": args.image,
            "entrypoint": f"grader lms {self.name} run --exercise {manifest.id}",
            "timeout": args.timeout,
            "environment": {"GRADER_EXERCISES": "/grader/exercises", TIMEOUT_ENV: str(args.timeout)},
        }
        print("question info.json:")
        print(json.dumps({"externalGradingOptions": options}, indent=2))
        print("assessment question entry:")
        print(json.dumps({"id": "<your question id>", "autoPoints": auto, **({"manualPoints": manual} if manual else {})}))
        for line in self.describe_plan(manifest):
            print(line)
        print('Add the course\'s secret to "environment" as "GRADER_SECRET_SEED" (info.json is never served to students); '
              "never put it in the image or in clientFiles (docs/lms.md)")
        return 0


def _size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8"))


def fit(payload: dict[str, Any], budget: int = BUDGET) -> dict[str, Any]:
    """Cut outputs (the longest first, then everything) until the file is within ``budget`` bytes."""
    for limit in (16000, 4000, 1000, 200, 0):
        if _size(payload) <= budget:
            return payload
        payload["output"] = clip(payload.get("output", ""), limit * 4)
        for test in payload.get("tests", []):
            test["output"] = clip(test.get("output", ""), limit)
            test["message"] = clip(test.get("message", ""), max(limit, 200))
    if _size(payload) > budget:  # only a pathological number of checks gets here
        payload["tests"] = payload.get("tests", [])[: max(1, len(payload.get("tests", [])) // 4)]
        payload["output"] = "(cut to fit PrairieLearn's 1 MB limit)"
    return payload
