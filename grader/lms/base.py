"""The LMS format interface: one platform's result file, rendered from the result model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

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
        """Write atomically (temporary file, then rename): the platform never reads half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.dumps(payload))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path
