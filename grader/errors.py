"""Exceptions a user can act on, each carrying the exit code SPEC.md gives it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class GraderError(Exception):
    """Base of the grader's own errors; ``str(err)`` is one line a person can act on."""

    exit_code = 3


class UsageError(GraderError):
    """Bad input from the user: a missing file, an unknown exercise, a bad flag (exit 2)."""

    exit_code = 2


class UploadError(UsageError):
    """An upload no submission can be formed from: nothing to grade, several files and none
    clearly the one, a file for another lab, a file that cannot be read. The student's to fix:
    exit 2 on the command line, a skipped entry in a batch, and on an LMS what its format says."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)


class OutputError(UsageError):
    """The output folder cannot be written (full, read-only, not a folder): bad input, exit 2.
    Everything already written is kept; the same command resumes once it is fixed."""


class InfrastructureError(GraderError):
    """The grader itself could not grade (exit 3); the result is written as not gradable."""

    exit_code = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a manifest: where, what was expected, what was found."""

    file: Path
    key: str
    expected: str
    received: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '(top level)'}: expected {self.expected}, received {self.received}"


class ManifestError(UsageError):
    """A manifest that does not validate; holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0]) if problems else "invalid manifest"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)
