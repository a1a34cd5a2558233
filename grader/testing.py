"""The labs' pytest tests: each check of a lab's manifest is one test, graded by the grader itself.

A lab's ``test_lab.py`` is one import line::

    from grader.testing import pytest_generate_tests, test_check  # noqa: F401

``pytest <lab folder>`` then grades ``solution.py``; ``LAB_IMPL=starter pytest <lab folder>``
grades ``starter.py`` (``LAB_IMPL`` may also be a path to any file). The grading is the same
one ``grader submit`` does (one grading per lab and file, shared by its tests); GPU checks are
marked ``gpu`` and skip without CUDA.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from grader import discovery
from grader.manifest import Hardware, LabManifest, load_manifest
from grader.plugins import default as default_plugins
from grader.results import CheckResult, GradeResult, Status
from grader.session import grade_file

IMPL_ENV = "LAB_IMPL"


class LabRun:
    """One lab, graded once (lazily) on the implementation ``LAB_IMPL`` names."""

    def __init__(self, lab_dir: Path, impl: str) -> None:
        self.directory = lab_dir
        self.file = lab_dir / f"{impl}.py" if impl in ("solution", "starter") else Path(impl).resolve()
        self.manifest: LabManifest = load_manifest(lab_dir, default_plugins().checkers())

    @functools.cached_property
    def result(self) -> GradeResult:
        return grade_file(discovery.intake(self.file, self.manifest), self.manifest)

    def check(self, check_id: str) -> CheckResult:
        return next(c for c in self.result.checks if c.id == check_id)

    def assert_passed(self, check_id: str) -> None:
        import pytest

        result = self.check(check_id)
        assert self.result.gradable, f"not gradable: {self.result.error}"
        if result.status is Status.skipped:
            pytest.skip(result.message)
        assert result.status is Status.passed, f"{check_id} {result.status.value}: {result.message}"


@functools.lru_cache(maxsize=None)
def lab_run(lab_dir: Path, impl: str) -> LabRun:
    return LabRun(lab_dir, impl)


def _run_for(module_file: str) -> LabRun:
    return lab_run(Path(module_file).resolve().parent, os.environ.get(IMPL_ENV, "solution"))


def pytest_generate_tests(metafunc: Any) -> None:
    """One test per check of the lab whose test_lab.py imported this; GPU checks marked ``gpu``."""
    if "check_id" not in metafunc.fixturenames:
        return
    import pytest

    checks = _run_for(metafunc.module.__file__).manifest.checks
    params = [
        pytest.param(cid, marks=[pytest.mark.gpu] if check.requires is Hardware.gpu else [], id=cid)
        for cid, check in checks.items()
    ]
    metafunc.parametrize("check_id", params)


def test_check(request: Any, check_id: str) -> None:
    """The check passes on the implementation under test."""
    _run_for(request.module.__file__).assert_passed(check_id)
