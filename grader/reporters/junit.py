"""junit.xml: one testcase per check, for CI dashboards (GitLab, Jenkins, GitHub actions).

JUnit cannot carry partial credit, so the score and maximum go into suite properties and each
check is a pass/fail/error/skip testcase whose ``classname`` is the lab id. Every failure and
error carries a message and a body (GitLab shows the body). The ``junit-xml`` package is kept
behind this module so it can be swapped for ElementTree; the tests validate the output
against a JUnit schema.
"""

from __future__ import annotations

import junit_xml

from grader.reporters.base import Reporter
from grader.results import CheckResult, GradeResult, Status


def _body(check: CheckResult) -> str:
    lines = [check.message]
    lines += [f"{m.where}: expected {m.expected}, got {m.got}" for m in check.mismatches]
    lines += [f"{k}: {v}" for k, v in check.details.items()]
    if check.traceback.strip():
        lines += ["", check.traceback.strip()]
    if check.hint:
        lines.append(f"hint: {check.hint}")
    return "\n".join(lines)


class JUnitReporter(Reporter):
    name = "junit"
    filename = "junit.xml"

    def render(self, result: GradeResult) -> str:
        cases = []
        for check in result.checks:
            case = junit_xml.TestCase(
                name=check.id,
                classname=result.exercise,
                elapsed_sec=round(check.duration_s, 6),
                stdout=f"{check.title} ({check.score:g}/{check.max_score:g} points)",
            )
            message = check.message.splitlines()[0][:500] if check.message else check.status.value
            if check.status is Status.failed:
                case.add_failure_info(message=message, output=_body(check), failure_type="WrongAnswer")
            elif check.status is Status.error:
                case.add_error_info(message=message, output=_body(check), error_type="SubmissionError")
            elif check.status is Status.skipped:
                case.add_skipped_info(message=message, output=_body(check))
            cases.append(case)
        if not result.gradable:
            case = junit_xml.TestCase(name="grader", classname=result.exercise, elapsed_sec=0.0)
            case.add_error_info(message=result.error or "the grader failed", output=result.error or "", error_type="GraderError")
            cases.append(case)
        properties = {
            "score": f"{result.score:g}",
            "max_score": f"{result.max_score:g}",
            "percent": f"{result.percent:.1f}",
            "gradable": str(result.gradable).lower(),
            "submission": result.submission,
            "submission_sha256": result.submission_sha256,
            "seed": str(result.seed),
            "sandbox": result.sandbox.mode,
            "grader": result.environment.grader,
        }
        suite = junit_xml.TestSuite(
            name=result.exercise,
            test_cases=cases,
            properties=properties,
            timestamp=result.started_at,
        )
        return junit_xml.to_xml_report_string([suite], prettyprint=True, encoding="utf-8")
