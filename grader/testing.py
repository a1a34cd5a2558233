"""Helpers for a lab's ``test_lab.py``: the lab's pytest tests are the grader's own checks.

``pytest <lab folder>`` grades ``solution.py``; ``LAB_IMPL=starter pytest <lab folder>``
grades ``starter.py`` (``LAB_IMPL`` may also be a path to any file). Each check of the
manifest is one test; GPU checks are marked ``gpu`` and skip without CUDA.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from grader.lab import Lab
from grader.manifest import Hardware, LabManifest, load_manifest
from grader.plugins import default as default_plugins
from grader.results import CheckResult, GradeResult, Status
from grader.sandbox.launchers import probe
from grader.seeds import Seeds
from grader.session import Grader

IMPL_ENV = "LAB_IMPL"


class LabRun:
    """One lab, graded once (lazily) on the implementation LAB_IMPL names."""

    def __init__(self, test_file: str | Path) -> None:
        self.directory = Path(test_file).resolve().parent
        impl = os.environ.get(IMPL_ENV, "solution")
        self.file = self.directory / f"{impl}.py" if impl in ("solution", "starter") else Path(impl).resolve()
        self.manifest: LabManifest = load_manifest(self.directory, default_plugins().checkers())

    def check_ids(self, gpu: bool) -> list[str]:
        want = Hardware.gpu if gpu else Hardware.cpu
        return [cid for cid, c in self.manifest.checks.items() if (c.requires is Hardware.gpu) == (want is Hardware.gpu)]

    @functools.cached_property
    def result(self) -> GradeResult:
        grader = Grader(Lab(self.manifest), default_plugins(), probe(), Seeds.from_env())
        return grader.grade(self.file)

    def check(self, check_id: str) -> CheckResult:
        return next(c for c in self.result.checks if c.id == check_id)

    def assert_passed(self, check_id: str) -> None:
        import pytest

        result = self.check(check_id)
        if result.status is Status.skipped:
            pytest.skip(result.message)
        assert self.result.gradable, f"not gradable: {self.result.error}"
        assert result.status is Status.passed, f"{check_id} {result.status.value}: {result.message}"
