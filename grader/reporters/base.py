"""The reporter interface: render one GradeResult into a file (or the terminal)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from grader.results import GradeResult


class Reporter:
    """A named renderer of results. ``filename`` is None for reporters that write no file."""

    name: ClassVar[str] = ""
    filename: ClassVar[str | None] = None

    def render(self, result: GradeResult) -> str:
        raise NotImplementedError

    def write(self, result: GradeResult, out_dir: Path) -> Path | None:
        """Write the rendering into ``out_dir`` and return the path written."""
        if self.filename is None:
            return None
        path = out_dir / self.filename
        path.write_text(self.render(result), encoding="utf-8")
        return path
