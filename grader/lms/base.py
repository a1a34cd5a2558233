"""The LMS format interface: one platform's result file, rendered from the result model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from grader.results import GradeResult


class LmsFormat:
    """A platform's ``results.json`` (or similar); ``payload`` must be valid whatever happened."""

    name: ClassVar[str] = ""
    filename: ClassVar[str] = "results.json"

    def payload(self, result: GradeResult) -> dict[str, Any]:
        raise NotImplementedError

    def write(self, result: GradeResult, path: Path) -> Path:
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.payload(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return path
