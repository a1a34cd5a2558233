"""Applying a unified diff to a text: how a lab stores a known-wrong file as the bug alone.

A lab's ``wrong/NAME.patch`` (or ``accepted/NAME.patch``) is ``diff -u solution.py NAME.py``
with comment lines (``# expect: ...``, a sentence on the bug) before the diff. The self-test
applies it to the current ``solution.py``, so the wrong file can never drift from the solution
it breaks: when a hunk's context no longer matches, the patch fails to apply and the self-test
says so.

Hunks are applied as GNU ``patch`` does with no fuzz: the removed and context lines must match
exactly, but a hunk may sit at another line than its header says (the solution may have grown
elsewhere). whatthepatch, the maintained pure-Python option, applies only at the exact line
numbers, which would break every patch on any unrelated edit of the solution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    """A patch that is malformed or no longer applies."""


@dataclass
class Hunk:
    old_start: int
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


@dataclass
class Patch:
    preamble: list[str]
    """The lines before the diff (expectations and the description of the bug)."""
    hunks: list[Hunk]


def parse(text: str) -> Patch:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("--- ")), None)
    if start is None or start + 1 >= len(lines) or not lines[start + 1].startswith("+++ "):
        raise PatchError("no unified diff (a '--- ' line followed by a '+++ ' line)")
    hunks: list[Hunk] = []
    for line in lines[start + 2 :]:
        match = HUNK.match(line)
        if match:
            hunks.append(Hunk(int(match.group(1))))
        elif not hunks:
            raise PatchError(f"text before the first hunk: {line[:60]!r}")
        elif line.startswith("\\"):  # "\ No newline at end of file"
            continue
        elif line[:1] in (" ", "") or line.startswith("-") or line.startswith("+"):
            body = line[1:]
            if line[:1] != "+":
                hunks[-1].old.append(body)
            if line[:1] != "-":
                hunks[-1].new.append(body)
        else:
            raise PatchError(f"a hunk line that is not context, '-' or '+': {line[:60]!r}")
    if not hunks:
        raise PatchError("the diff has no hunks")
    return Patch(lines[:start], hunks)


def _find(lines: list[str], block: list[str], near: int, lowest: int) -> int | None:
    """The start of ``block`` in ``lines`` at or after ``lowest``, closest to ``near``."""
    size = len(block)
    candidates = [i for i in range(lowest, len(lines) - size + 1) if lines[i : i + size] == block]
    return min(candidates, key=lambda i: abs(i - near)) if candidates else None


def apply(patch: Patch, text: str) -> str:
    """``text`` with every hunk applied, or PatchError naming the first hunk that does not match."""
    lines = text.splitlines()
    out: list[str] = []
    pos = 0
    for number, hunk in enumerate(patch.hunks, start=1):
        at = _find(lines, hunk.old, hunk.old_start - 1, pos)
        if at is None:
            first = next((line for line in hunk.old if line.strip()), "")
            raise PatchError(f"hunk {number} (at line {hunk.old_start}, {first.strip()[:60]!r}) no longer matches")
        out += lines[pos:at] + hunk.new
        pos = at + len(hunk.old)
    out += lines[pos:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
