"""Reporters render one result model: JUnit valid against the schema, markdown and terminal readable."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from markdown_it import MarkdownIt

from grader.reporters.jsonfile import JsonReporter
from grader.reporters.junit import JUnitReporter
from grader.reporters.markdown import MarkdownReporter, cell, code
from grader.reporters.terminal import TerminalReporter
from grader.results import CheckResult, Environment, GradeResult, Mismatch, SandboxInfo, Status

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "junit-schemas"
JENKINS = xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd"))
"""The schema the Jenkins xUnit plugin validates JUnit reports against."""
ANT = xmlschema.XMLSchema(str(SCHEMAS / "windyroad-JUnit.xsd"))
"""The Ant JUnit task's format."""


def validate(path: Path) -> None:
    JENKINS.validate(str(path))
    ANT.validate(str(path))
    assert gitlab_cases(path)


def gitlab_cases(path: Path) -> dict[str, tuple[str, str, float, str]]:
    """What GitLab's unit-test report shows, read the way its parser reads it (docs: "Unit test
    reports"): testcase name, classname as the suite, time in seconds, and the status with the
    text of the failure, error or skipped element; duplicate names keep the first."""
    cases: dict[str, tuple[str, str, float, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        assert name, "GitLab needs a name on every testcase"
        status, text = "success", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                status, text = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], element.text or ""
        cases.setdefault(name, (case.get("classname") or "", status, float(case.get("time") or 0), text))
    return cases


def check(cid: str, status: Status, message: str = "", **kw) -> CheckResult:
    score = 1.0 if status is Status.passed else 0.0
    return CheckResult(
        id=cid, title=f"title of {cid}", function="route", kind="oracle", status=status,
        score=score, max_score=1.0, message=message or status.value, **kw,
    )  # fmt: skip


@pytest.fixture
def result() -> GradeResult:
    return GradeResult(
        exercise="lab-01-moe-routing",
        submission="alice <&> | pipes.py",
        submission_sha256="ab" * 32,
        score=1.0,
        max_score=4.0,
        checks=[
            check("a-passes", Status.passed),
            check(
                "b-fails",
                Status.failed,
                "case 2 of 5: out: 3 of 9 value(s) differ | with a pipe",
                mismatches=[Mismatch(where="out[0, 1]", expected="1", got="2")],
                hint="look at the relu",
            ),
            check("c-errors", Status.error, "route raised ValueError: bad <input> & \x1b[31m"),
            check("d-skips", Status.skipped, "needs a CUDA GPU"),
        ],
        environment=Environment(grader="0.1.0", python="3.11"),
        sandbox=SandboxInfo(mode="bubblewrap"),
        seed=7,
    )


def test_junit_is_schema_valid_with_messages(result: GradeResult, tmp_path: Path) -> None:
    path = JUnitReporter().write(result, tmp_path)
    assert path is not None
    validate(path)
    shown = gitlab_cases(path)
    assert shown["b-fails"][:2] == ("lab-01-moe-routing", "failed") and "out[0, 1]: expected 1, got 2" in shown["b-fails"][3]
    assert shown["c-errors"][1] == "error" and shown["d-skips"][1] == "skipped" and shown["a-passes"][1] == "success"
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "lab-01-moe-routing"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["score"] == "1" and props["max_score"] == "4" and props["sandbox"] == "bubblewrap"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert all(c.get("classname") == "lab-01-moe-routing" for c in cases.values())
    failure = cases["b-fails"].find("failure")
    assert failure is not None and failure.get("message", "").startswith("case 2 of 5")
    assert "out[0, 1]: expected 1, got 2" in (failure.text or "") and "hint: look at the relu" in (failure.text or "")
    error = cases["c-errors"].find("error")
    assert error is not None and "ValueError" in error.get("message", "")
    assert cases["d-skips"].find("skipped") is not None
    assert cases["a-passes"].find("failure") is None and cases["a-passes"].find("error") is None


def test_junit_for_ungradable_result_still_valid(result: GradeResult, tmp_path: Path) -> None:
    result.gradable = False
    result.error = "the reference failed"
    path = JUnitReporter().write(result, tmp_path)
    validate(path)
    assert "the reference failed" in path.read_text()
    assert len(ET.parse(path).getroot().findall(".//testcase")) == len(result.checks)  # no extra testcase


def test_junit_from_the_old_library_fails_the_real_schemas(tmp_path: Path) -> None:
    """The schemas bite: junit-xml 1.9's `disabled` attribute is what made its output invalid."""
    bad = tmp_path / "junit.xml"
    bad.write_text(
        '<?xml version="1.0" ?><testsuites disabled="0" errors="0" failures="0" tests="1" time="0.0">'
        '<testsuite name="s" tests="1" failures="0" errors="0" time="0"><testcase name="t"/></testsuite></testsuites>'
    )
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        JENKINS.validate(str(bad))
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        ANT.validate(str(bad))


def test_junit_survives_any_text(result: GradeResult, tmp_path: Path) -> None:
    result.checks[1].message = "bad \x00\x1b[31m \ud800 <&> ]]> text"
    result.submission_output = "printed \x07\x0c\udcff"
    result.started_at = "not a time"
    path = JUnitReporter().write(result, tmp_path)
    validate(path)


def test_result_json_round_trips(result: GradeResult, tmp_path: Path) -> None:
    path = JsonReporter().write(result, tmp_path)
    data = json.loads(path.read_text())
    assert GradeResult.model_validate(data) == result
    assert data["checks"][1]["status"] == "failed" and data["sandbox"]["mode"] == "bubblewrap"


def test_markdown_scorecard(result: GradeResult) -> None:
    text = MarkdownReporter().render(result)
    assert text.startswith("# lab-01-moe-routing: 1 / 4 (25%)")
    table = next(b for b in text.split("\n\n") if b.startswith("| | Check |")).splitlines()
    assert table[0] == "| | Check | Function | Score | Result |" and len(table) == 6  # header, rule, 4 checks
    assert "\\|" in text  # pipes in messages are escaped inside tables
    assert "## ❌ `b-fails`: failed" in text and "| `out[0, 1]` | 1 | 2 |" in text
    assert "**What to look at:** look at the relu" in text
    assert "## ⏭️ `d-skips`: skipped" in text
    assert "## ✅ `a-passes`" not in text  # passed checks get no section
    assert "<input>" not in text.split("## 💥")[0]  # table cells are escaped
    assert "\x1b" not in text


@pytest.mark.parametrize(
    "name",
    ["a`b.py", "``x``.py", "`` ![t](https:e.example) ``.py", "a\\|[c](https:e.example)|b.py", "`", "ends with `"],
)
def test_code_spans_hold_any_text(name: str) -> None:
    """A code span shows exactly its text: no run of backticks in it closes it, no pipe splits a
    table row, rendered as CommonMark with GitHub's tables."""
    renderer = MarkdownIt("commonmark").enable("table")
    prose = renderer.render(f"Submission {code(name)} graded")
    assert prose.count("<code>") == 1 and "<a " not in prose and "<img" not in prose, prose
    assert html.unescape(prose.split("<code>")[1].split("</code>")[0]) == name
    row = renderer.render(f"| file | result |\n| --- | --- |\n| {code(name, in_table=True)} | {cell('[x](https:e.example) `y` <b>')} |")
    cells = row.split("<tbody>")[1].count("<td>")
    assert cells == 2 and "<a " not in row and "<b>" not in row, row
    assert html.unescape(row.split("<code>")[1].split("</code>")[0]) == name


def test_markdown_shows_degraded_sandbox(result: GradeResult) -> None:
    result.sandbox = SandboxInfo(mode="process", degraded=True, warnings=["DEGRADED ISOLATION: plain process"])
    assert "> ⚠️ DEGRADED ISOLATION: plain process" in MarkdownReporter().render(result)


def test_terminal_scorecard(result: GradeResult) -> None:
    text = TerminalReporter(color=False).render(result, Path("reports/x"))
    lines = text.splitlines()
    assert lines[0] == "grader 0.1.0 · lab-01-moe-routing · alice <&> | pipes.py"
    assert any(line.strip().startswith("FAIL  b-fails") and "case 2 of 5" in line for line in lines)
    assert any(line.strip().startswith("PASS  a-passes") for line in lines)
    assert "Score: 1 / 4 (25%)" in text and "1 passed · 1 failed · 1 error · 1 skipped" in text
    assert "Next: b-fails: look at the relu" in text
    assert "\x1b" not in text  # the submission's escape sequence is neutralised
    colored = TerminalReporter(color=True).render(result)
    assert "\x1b[32mPASS" in colored


@pytest.mark.parametrize("width", [60, 100, 200])
def test_terminal_keeps_expected_versus_got_at_any_width(result: GradeResult, width: int) -> None:
    long = "case 3 of 9 (T=64, D=512, E=8, k=2): topk_weights: 17 of 128 value(s) differ from the reference " * 2
    result.checks[1].message = long + "; first at topk_weights[3, 1]: expected 0.25, got 0.75"
    text = TerminalReporter(color=False, width=width).render(result)
    joined = " ".join(text.split())
    assert "expected 0.25, got 0.75" in joined
    assert all(len(line) <= max(width, 60) + 40 for line in text.splitlines() if "b-fails" not in line)


def test_terminal_says_where_a_message_it_cut_is_whole(result: GradeResult) -> None:
    result.checks[1].message = "case 3 of 9: out: 17 of 128 float32 value(s) differ from the reference; " * 12 + "expected 1, got 2"
    text = TerminalReporter(color=False, width=100).render(result)
    assert "… (cut here: the whole message is in scorecard.md and result.json) …" in text
    assert "expected 1, got 2" in " ".join(text.split())
    result.checks[1].message = "short"
    assert "cut here" not in TerminalReporter(color=False, width=100).render(result)


def test_terminal_shows_the_submissions_output_and_traceback(result: GradeResult) -> None:
    result.checks[2].traceback = 'Traceback (your code only):\n  File "your file", line 3, in route\nValueError: bad'
    result.checks[2].hint = ""
    result.submission_output = "\n".join(f"debug {i}" for i in range(50))
    text = TerminalReporter(color=False).render(result)
    assert 'File "your file", line 3, in route' not in text  # the first problem is b-fails, not c-errors
    result.checks[1].status = Status.passed
    text = TerminalReporter(color=False).render(result)
    assert 'File "your file", line 3, in route' in text
    assert "debug 49" in text and "debug 10" not in text  # the last lines, bounded
    assert "Next: c-errors: route raised ValueError" in text  # no algorithm hint for a crash
