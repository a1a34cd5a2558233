"""The scorecard printed by ``grader submit``: one line per check, the total, what to do next."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grader.reporters.base import Reporter
from grader.results import GradeResult, Status
from grader.text import printable

LABEL = {Status.passed: "PASS ", Status.failed: "FAIL ", Status.error: "ERROR", Status.skipped: "SKIP "}
COLOR = {Status.passed: "32", Status.failed: "31", Status.error: "35", Status.skipped: "33"}


def _paint(text: str, code: str, on: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if on else text


def _one_line(text: str, width: int) -> str:
    text = " ".join(printable(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


class TerminalReporter(Reporter):
    name = "terminal"
    filename = None

    def __init__(self, color: bool | None = None) -> None:
        if color is None:
            color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.color = color

    def render(self, result: GradeResult, out_dir: Path | None = None) -> str:
        c = self.color
        lines = [f"grader {result.environment.grader} · {result.exercise} · {printable(result.submission, 200, False)}"]
        if result.sandbox.degraded or result.sandbox.warnings:
            for warning in result.sandbox.warnings:
                lines.append(_paint(f"  !! {warning}", "1;33", c))
        else:
            lines.append(f"  sandbox: {result.sandbox.mode}")
        lines.append("")
        width = max((len(ch.id) for ch in result.checks), default=10)
        for ch in result.checks:
            label = _paint(LABEL[ch.status], COLOR[ch.status], c)
            score = f"{ch.score:g}/{ch.max_score:g}".rjust(7)
            message = "" if ch.status is Status.passed else "  " + _one_line(ch.message, 110)
            lines.append(f"  {label} {ch.id.ljust(width)} {score}{message}")
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
            lines.append(_paint(f"  NOT GRADABLE: {result.error}", "1;31", c))
        first = next((ch for ch in result.checks if ch.status in (Status.failed, Status.error)), None)
        if first is not None:
            lines.append(f"  Next: {first.id}: {first.hint or _one_line(first.message, 120)}")
        if out_dir is not None:
            lines.append(f"  Reports: {out_dir}/ (result.json, scorecard.md, junit.xml)")
        return "\n".join(lines) + "\n"

    def write(self, result: GradeResult, out_dir: Path) -> Path | None:
        sys.stdout.write(self.render(result, out_dir))
        sys.stdout.flush()
        return None
