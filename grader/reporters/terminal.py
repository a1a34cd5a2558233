"""The scorecard printed by ``grader submit``: one entry per check, the total, what to do next.

Messages are wrapped to the terminal's width rather than cut, so the "expected X, got Y" part at
the end of a mismatch is never lost; what the submission printed and the traceback of its first
error (its own frames only) are shown, bounded.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

from grader.reporters.base import Reporter
from grader.results import CheckResult, GradeResult, Status
from grader.text import printable

LABEL = {Status.passed: "PASS ", Status.failed: "FAIL ", Status.error: "ERROR", Status.skipped: "SKIP "}
COLOR = {Status.passed: "32", Status.failed: "31", Status.error: "35", Status.skipped: "33"}
MESSAGE_LINES = 4
"""At most this many lines per check's message (a long mismatch list belongs in scorecard.md)."""
OUTPUT_LINES = 8
TRACEBACK_LINES = 12


def _paint(text: str, code: str, on: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if on else text


def _flat(text: str) -> str:
    return " ".join(printable(text).split())


CUT = "… (cut here: the whole message is in scorecard.md and result.json) …"


def _wrap(text: str, width: int, indent: str, lines: int = MESSAGE_LINES) -> list[str]:
    """``text`` on at most ``lines`` lines of ``width``; when cut, the end is kept (it holds the
    expected-versus-got detail), and the elided middle says where the whole text is."""
    wrapped = textwrap.wrap(_flat(text), max(20, width - len(indent))) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[: lines - 2] + [CUT] + wrapped[-1:]
    return [indent + line for line in wrapped]


def _tail(text: str, lines: int) -> list[str]:
    kept = [printable(line, 300, keep_newlines=False) for line in text.rstrip().splitlines()]
    return (["…"] if len(kept) > lines else []) + kept[-lines:]


def _next(first: CheckResult) -> str:
    """What to look at first: the check's hint when it fits why the check failed, else its message."""
    return first.hint or _flat(first.message)


class TerminalReporter(Reporter):
    name = "terminal"
    filename = None

    def __init__(self, color: bool | None = None, width: int | None = None) -> None:
        if color is None:
            color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.width = width or shutil.get_terminal_size((100, 24)).columns

    def render(self, result: GradeResult, out_dir: Path | None = None) -> str:
        c = self.color
        lines = [f"grader {result.environment.grader} · {result.exercise} · {printable(result.submission, 200, False)}"]
        if not result.gradable and all(ch.message == f"not graded: {result.error}" for ch in result.checks):
            # Nothing was graded (a missing extra, no sandbox): the reason is the whole answer.
            lines += _wrap(f"NOT GRADABLE: {result.error}", self.width, "  ", lines=8)
            if out_dir is not None:
                lines.append(f"  Reports: {out_dir}/ (result.json, scorecard.md, junit.xml; nothing was graded)")
            return "\n".join(lines) + "\n"
        if result.sandbox.degraded or result.sandbox.warnings:
            for warning in result.sandbox.warnings:
                lines.append(_paint(f"  !! {warning}", "1;33", c))
        else:
            lines.append(f"  sandbox: {result.sandbox.mode}")
        lines.append("")
        width = max((len(ch.id) for ch in result.checks), default=10)
        indent = " " * (2 + 5 + 1 + width + 1 + 7 + 2)
        for ch in result.checks:
            label = _paint(LABEL[ch.status], COLOR[ch.status], c)
            score = f"{ch.score:g}/{ch.max_score:g}".rjust(7)
            head = f"  {label} {ch.id.ljust(width)} {score}"
            if ch.status is Status.passed:
                lines.append(head)
                continue
            message = _wrap(ch.message, self.width, indent)
            lines.append(head + "  " + message[0].lstrip())
            lines += message[1:]
        counts = result.counts()
        lines += [
            "",
            "  "
            + _paint(f"Score: {result.score:g} / {result.max_score:g} ({result.percent:.0f}%)", "1", c)
            + "   "
            + " · ".join(f"{counts[s]} {s.value}" for s in Status)
            + f"   in {result.duration_s:.2f} s",
        ]
        if not result.gradable:
            lines += _wrap(f"NOT GRADABLE: {result.error}", self.width, "  ")
        first = next((ch for ch in result.checks if ch.status in (Status.failed, Status.error)), None)
        if first is not None:
            lines += _wrap(f"Next: {first.id}: {_next(first)}", self.width, "  ", lines=6)
            if first.traceback.strip():
                lines += ["", "  Traceback of that error:"]
                lines += ["    " + line for line in _tail(first.traceback, TRACEBACK_LINES)]
        if result.submission_output.strip():
            lines += ["", "  Your code printed (last lines):"]
            lines += ["    " + line for line in _tail(result.submission_output, OUTPUT_LINES)]
        if out_dir is not None:
            lines.append(f"  Reports: {out_dir}/ (result.json, scorecard.md, junit.xml)")
        return "\n".join(lines) + "\n"

    def write(self, result: GradeResult, out_dir: Path) -> Path | None:
        sys.stdout.write(self.render(result, out_dir))
        sys.stdout.flush()
        return None
