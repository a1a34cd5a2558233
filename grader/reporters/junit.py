"""junit.xml: one testcase per check, for CI dashboards (GitLab, Jenkins, GitHub actions).

JUnit has no standard, so the file keeps to what every reader accepts at once: it validates
against the Jenkins xUnit plugin's junit-10.xsd *and* the Ant task's schema, and reads the same
through GitLab's parser. That subset is small: a ``<testsuites>`` root with no attributes (Ant
allows none); a ``<testsuite>`` with ``package``, ``id``, ``hostname`` and a timestamp without a
time zone; its ``<properties>`` first and ``<system-out>``/``<system-err>`` last; testcases with
only ``name``, ``classname`` and ``time``, each holding at most one failure, error or skipped
element with a message, a type and a body (GitLab shows the body). The standard library's
ElementTree writes exactly that; junit-xml 1.9 (unmaintained since 2020) writes a ``disabled``
attribute both schemas reject.

JUnit cannot carry partial credit, so the score and maximum are suite properties and each
check is a pass/fail/error/skip testcase whose ``classname`` is the lab id.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

from grader.reporters.base import Reporter
from grader.results import CheckResult, GradeResult, Status

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
TYPE = {Status.failed: "WrongAnswer", Status.error: "SubmissionError", Status.skipped: "Skipped"}
TAG = {Status.failed: "failure", Status.error: "error", Status.skipped: "skipped"}


def xml_text(text: object) -> str:
    """Text every XML 1.0 parser accepts (control characters and lone surrogates dropped)."""
    return _NOT_XML.sub("", str(text))


def _body(check: CheckResult) -> str:
    lines = [f"{check.title} ({check.score:g}/{check.max_score:g} points)", "", check.message]
    lines += [f"{m.where}: expected {m.expected}, got {m.got}" for m in check.mismatches]
    lines += [f"{k}: {v}" for k, v in check.details.items()]
    if check.traceback.strip():
        lines += ["", check.traceback.strip()]
    if check.hint:
        lines.append(f"hint: {check.hint}")
    return "\n".join(lines)


def _timestamp(started_at: str | None) -> str:
    """ISO 8601 in UTC without a zone or fraction: the one form the Ant schema accepts."""
    try:
        moment = dt.datetime.fromisoformat(started_at) if started_at else dt.datetime.now(dt.timezone.utc)
    except ValueError:
        moment = dt.datetime.now(dt.timezone.utc)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


class JUnitReporter(Reporter):
    name = "junit"
    filename = "junit.xml"

    def render(self, result: GradeResult) -> str:
        counts = result.counts()
        total = _seconds(sum(c.duration_s for c in result.checks))
        root = ET.Element("testsuites")  # the Ant schema allows it no attributes at all
        suite = ET.SubElement(
            root, "testsuite",
            name=xml_text(result.exercise), package=xml_text(result.exercise), id="0", hostname="grader",
            timestamp=_timestamp(result.started_at), tests=str(len(result.checks)),
            failures=str(counts[Status.failed]), errors=str(counts[Status.error]),
            skipped=str(counts[Status.skipped]), time=total,
        )  # fmt: skip
        properties = ET.SubElement(suite, "properties")
        values = {
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
        if result.error:
            values["error"] = result.error
        for name, value in values.items():
            ET.SubElement(properties, "property", name=name, value=xml_text(value))
        for check in result.checks:
            case = ET.SubElement(
                suite, "testcase", name=xml_text(check.id), classname=xml_text(result.exercise), time=_seconds(check.duration_s)
            )
            if check.status is not Status.passed:
                first = check.message.splitlines()[0][:500] if check.message.strip() else check.status.value
                outcome = ET.SubElement(case, TAG[check.status], message=xml_text(first), type=TYPE[check.status])
                outcome.text = xml_text(_body(check))
        ET.SubElement(suite, "system-out").text = xml_text(result.submission_output)
        ET.SubElement(suite, "system-err").text = xml_text(f"NOT GRADABLE: {result.error}" if not result.gradable else "")
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
