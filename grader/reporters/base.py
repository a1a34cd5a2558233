"""The reporter interface: render one GradeResult into a file (or the terminal)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from grader.atomic import write_atomic
from grader.results import GradeResult


class Reporter:
    """A named renderer of results. ``filename`` is None for reporters that write no file."""

    name: ClassVar[str] = ""
    filename: ClassVar[str | None] = None

    def render(self, result: GradeResult) -> str:
        raise NotImplementedError

    def write(self, result: GradeResult, out_dir: Path) -> Path | None:
        """Write the rendering into ``out_dir`` (atomically: whole or absent) and return the path written."""
        if self.filename is None:
            return None
        return write_atomic(out_dir / self.filename, self.render(result))
