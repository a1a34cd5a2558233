"""Shared fixtures: labs copied into temporary folders, the CLI run in-process, grading helpers."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support import LAB01

from grader import cli
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import GradeResult
from grader.session import Grader, GradingOptions


@pytest.fixture
def lab01() -> Path:
    return LAB01


@pytest.fixture
def make_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Copy a lab into a temporary exercises/ tree (which the CLI then uses) and edit it."""

    def make(source: Path = LAB01, edit: Callable[[str], str] | None = None, files: dict[str, str] | None = None) -> Path:
        root = tmp_path / "exercises"
        dest = root / source.parent.name / source.name
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        if edit is not None:
            manifest = dest / "manifest.toml"
            manifest.write_text(edit(manifest.read_text()))
        for name, text in (files or {}).items():
            (dest / name).write_text(text)
        monkeypatch.setenv("GRADER_EXERCISES", str(root))
        return dest

    return make


@pytest.fixture
def grade() -> Callable[..., GradeResult]:
    """Grade a file (or source text) against a lab folder through the real sandbox."""

    def run(lab_dir: Path, submission: Path | str, tmp: Path | None = None, seed: int | None = None) -> GradeResult:
        if isinstance(submission, str):
            assert tmp is not None
            path = tmp / "submission.py"
            path.write_text(submission)
        else:
            path = submission
        manifest = load_manifest(lab_dir, default_plugins().checkers())
        grader = Grader(manifest, GradingOptions(seed=seed))
        return grader.grade(path)

    return run


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``grader ...`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse exits for --help and bad flags
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def weak_process_tier(monkeypatch: pytest.MonkeyPatch):
    """Make ``--sandbox process`` degraded, as on a kernel without Landlock (before 5.13) or under a
    seccomp policy that forbids it: the tier then leaves the lab's files within reach."""
    from grader.sandbox import tiers
    from grader.sandbox.boot import landlock

    monkeypatch.setattr(landlock, "abi", lambda: 0)
    tiers.probe.cache_clear()
    yield
    tiers.probe.cache_clear()
