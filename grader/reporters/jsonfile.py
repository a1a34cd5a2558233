"""result.json: the result model serialised, exactly as SPEC.md names its fields."""

from __future__ import annotations

from grader.reporters.base import Reporter
from grader.results import GradeResult


class JsonReporter(Reporter):
    name = "json"
    filename = "result.json"

    def render(self, result: GradeResult) -> str:
        return result.model_dump_json(indent=2) + "\n"
