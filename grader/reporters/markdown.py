"""scorecard.md: a summary table, then one section per check that did not pass."""

from __future__ import annotations

import re

from grader.reporters.base import Reporter
from grader.results import CheckResult, GradeResult, Status
from grader.text import printable

ICON = {Status.passed: "✅", Status.failed: "❌", Status.error: "💥", Status.skipped: "⏭️"}


def _line(text: str, limit: int) -> str:
    text = " ".join(printable(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(text: str, limit: int = 160) -> str:
    """Text that renders as itself, in a table cell or a line of prose: one line, no link, image,
    HTML or code span can start in it (backslash, backticks, brackets and pipes escaped, ``<`` an
    entity)."""
    text = _line(text, limit)
    for char in "\\`[]|":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;")


def code(text: str, limit: int = 160, in_table: bool = False) -> str:
    """Text as one inline code span that nothing in it can close: delimited by a run of backticks
    longer than any it holds (CommonMark), padded with a space where it starts or ends with a
    backtick. ``in_table``: pipes escaped, since a table row splits at a pipe even inside a span."""
    text = _line(text, limit)
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def block(text: str) -> str:
    """Text in a fenced block that no content can close early."""
    text = printable(text)
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}"


def _score(value: float) -> str:
    return f"{value:g}"


def _section(check: CheckResult) -> list[str]:
    lines = [
        f"## {ICON[check.status]} `{check.id}`: {check.status.value}",
        "",
        f"*{cell(check.title, 300)}* · function `{check.function}` · {check.kind} · "
        f"{_score(check.score)} / {_score(check.max_score)} points",
        "",
        block(check.message),
        "",
    ]
    if check.mismatches:
        lines += ["First mismatches:", "", "| where | expected | got |", "| --- | --- | --- |"]
        lines += [f"| {code(m.where, in_table=True)} | {cell(m.expected)} | {cell(m.got)} |" for m in check.mismatches]
        lines.append("")
    if check.table:
        lines += table(check.table) + [""]
    if check.traceback.strip():
        lines += ["Traceback (your code's frames):", "", block(check.traceback.strip()[-4000:]), ""]
    if check.hint:
        lines += [f"**What to look at:** {check.hint}", ""]
    return lines


def table(rows: list[dict[str, object]]) -> list[str]:
    columns = list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    out += ["| " + " | ".join(cell(str(r.get(c, ""))) for c in columns) + " |" for r in rows]
    return out


class MarkdownReporter(Reporter):
    name = "markdown"
    filename = "scorecard.md"

    def render(self, result: GradeResult) -> str:
        counts = result.counts()
        lines = [
            f"# {result.exercise}: {_score(result.score)} / {_score(result.max_score)} ({result.percent:.0f}%)",
            "",
            f"Submission {code(result.submission)} (sha256 `{result.submission_sha256[:12]}`) · "
            f"seed {result.seed} · sandbox **{result.sandbox.mode}** · grader {result.environment.grader}",
            "",
            " · ".join(f"{counts[s]} {s.value}" for s in Status),
            "",
        ]
        if not result.gradable:
            lines += [f"> **Not gradable:** {cell(result.error or 'the grader failed', 500)}", ""]
        for warning in result.sandbox.warnings:
            lines += [f"> ⚠️ {cell(warning, 500)}", ""]
        lines += ["| | Check | Function | Score | Result |", "| --- | --- | --- | --- | --- |"]
        for c in result.checks:
            lines.append(
                f"| {ICON[c.status]} | `{c.id}` | `{c.function}` | {_score(c.score)} / {_score(c.max_score)} | {cell(c.message)} |"
            )
        lines.append("")
        for c in result.checks:
            if c.status is not Status.passed:
                lines += _section(c)
            elif c.table:
                lines += [f"## {ICON[c.status]} `{c.id}`", "", *table(c.table), ""]
        if result.submission_output.strip():
            lines += ["## What the submission printed (last lines)", "", block(result.submission_output.strip()), ""]
        return "\n".join(lines)
