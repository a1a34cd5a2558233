"""The batch's progress on stderr: one updating bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

from grader.text import printable


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Counts graded submissions; ``total`` excludes those skipped as already graded."""

    def __init__(self, total: int, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        if os.environ.get("TERM") == "dumb":
            self.tty = False
        self.done = 0
        self.problems = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._active: dict[int, tuple[str, float]] = {}
        self._durations: list[float] = []

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def started_one(self, slot: int, student: str) -> None:
        self._active[slot] = (student, time.monotonic())
        self.draw()

    def finished_one(self, slot: int, student: str, outcome: str, problem: bool = False) -> None:
        started = self._active.pop(slot, None)
        if started is not None:
            self._durations.append(time.monotonic() - started[1])
        self.done += 1
        self.problems += problem
        if self.tty:
            if problem:  # kept above the bar, so it is still on screen at the end
                self.stream.write(f"\r\033[K{printable(student, keep_newlines=False)}: {printable(outcome, 300, False)}\n")
            self.draw(force=True)
        else:
            width = len(str(self.total))
            print(f"[{self.done:>{width}}/{self.total}] {printable(student, keep_newlines=False)}: {outcome}", file=self.stream, flush=True)

    def draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        columns = shutil.get_terminal_size((100, 20)).columns
        bar_width = max(10, min(30, columns - 70))
        filled = int(bar_width * self.done / self.total) if self.total else bar_width
        bar = "#" * filled + "-" * (bar_width - filled)
        text = f"[{bar}] {self.done}/{self.total}  {self.rate:.1f}/s  eta {self.eta(now)}"
        if self.problems:
            text += f"  {self.problems} not gradable"
        if self._active:
            text += "  grading " + ", ".join(f"{name} {_clock(now - t)}" for name, t in sorted(self._active.values()))
        text = printable(text, keep_newlines=False)[: columns - 1]
        self.stream.write("\r\033[K" + text)
        self.stream.flush()

    def eta(self, now: float | None = None) -> str:
        """The time left at the rate so far; '?' before anything finished, or while a submission
        has run far longer than they take (it may be heading for its time limit)."""
        now = time.monotonic() if now is None else now
        if not self._durations or self.rate <= 0:
            return "?"
        typical = sorted(self._durations)[len(self._durations) // 2]
        if any(now - t > 2 * typical + 1 for _, t in self._active.values()):
            return "?"
        return _clock((self.total - self.done) / self.rate)

    def close(self) -> None:
        if self.tty:
            self.draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
