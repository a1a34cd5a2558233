"""The LMS format interface: one platform's result file, rendered from the result model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from grader.atomic import write_atomic
from grader.results import GradeResult


class LmsFormat:
    """A platform's ``results.json`` (or similar); ``payload`` must be valid whatever happened."""

    name: ClassVar[str] = ""
    filename: ClassVar[str] = "results.json"

    def payload(self, result: GradeResult) -> dict[str, Any]:
        raise NotImplementedError

    def error_payload(self, reason: str) -> dict[str, Any]:
        """A valid file for when there is no result at all (the lab itself could not be loaded)."""
        raise NotImplementedError

    def dumps(self, payload: dict[str, Any]) -> str:
        return json.dumps(payload, indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    def write(self, result: GradeResult, path: Path) -> Path:
        return self.write_payload(self.payload(result), path)

    def write_payload(self, payload: dict[str, Any], path: Path) -> Path:
        """Write atomically: the platform never reads half a file."""
        return write_atomic(path, self.dumps(payload))
