"""Grading inside an LMS container: find the upload, grade it officially, always leave a result file.

Both platforms hand the grader a folder of uploaded files and read one JSON file back. Whatever
happens (no Python file, several candidates, a lab that will not load, no sandbox, a grader
bug) this module still produces something the platform's format can render: a result, or a
reason when not even the lab could be loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from grader import discovery
from grader.errors import UsageError
from grader.lms.base import LmsFormat
from grader.manifest import LabManifest, load_manifest
from grader.plugins import default as default_plugins
from grader.reporters.terminal import TerminalReporter
from grader.results import GradeResult
from grader.seeds import Seeds
from grader.session import Grader, GradingOptions, internal_error, not_gradable


class Problem(str, Enum):
    """Why a container grading produced no score: the student's upload, or the grader."""

    submission = "submission"
    infrastructure = "infrastructure"


@dataclass
class ContainerGrading:
    result: GradeResult | None
    problem: Problem | None = None
    reason: str = ""

    @property
    def exit_code(self) -> int:
        return {None: 0, Problem.submission: 2, Problem.infrastructure: 3}[self.problem]


class _Infra(Exception):
    pass


def _lab(exercise: str | None, candidates: list[Path]) -> LabManifest:
    plugins = default_plugins()
    labs = discovery.find_labs()
    if not labs:
        raise _Infra(f"no labs found under {discovery.exercises_root()}")
    try:
        if exercise:
            lab_id = discovery.resolve(exercise, labs)
        elif len(labs) == 1:
            lab_id = next(iter(labs))
        else:
            manifests, _ = discovery.load_all(labs, plugins.checkers())
            if len(candidates) != 1:
                raise UsageError("the autograder was set up without --exercise and the upload is not one file")
            lab_id = discovery.lab_for_file(candidates[0].read_text(errors="replace"), None, labs, manifests)
        return load_manifest(labs[lab_id], plugins.checkers())
    except UsageError as exc:
        raise _Infra(f"the autograder is misconfigured: {exc}") from None


def grade_upload(folder: Path, exercise: str | None, options: GradingOptions) -> ContainerGrading:
    """Grade the one submission in ``folder`` as official grading; never raises."""
    seeds = Seeds.from_env(options.seed)
    manifest: LabManifest | None = None
    try:
        candidates, notes = discovery.python_files(folder) if folder.is_dir() else ([], [])
        manifest = _lab(exercise, candidates)
        try:
            file = discovery.read_submission(discovery.pick_submission(candidates, manifest, "your upload"))
        except UsageError as exc:
            reason = str(exc) + (f" ({'; '.join(notes)})" if notes else "")
            return ContainerGrading(not_gradable(manifest, "(none)", "", reason, seeds=seeds), Problem.submission, reason)
        result = Grader(manifest, options).grade(file)
        if not result.gradable:
            return ContainerGrading(result, Problem.infrastructure, result.error or "")
        return ContainerGrading(result)
    except _Infra as exc:
        return _failed(manifest, str(exc), seeds)
    except Exception as exc:  # a grader bug: the platform still gets a valid file saying so
        return _failed(manifest, internal_error(exc), seeds)


def _failed(manifest: LabManifest | None, reason: str, seeds: Seeds) -> ContainerGrading:
    if manifest is None:
        return ContainerGrading(None, Problem.infrastructure, reason)
    try:
        return ContainerGrading(not_gradable(manifest, "(none)", "", reason, seeds=seeds), Problem.infrastructure, reason)
    except Exception:
        return ContainerGrading(None, Problem.infrastructure, reason)


def write_platform_file(fmt: LmsFormat, grading: ContainerGrading, path: Path) -> None:
    """The platform's file for ``grading``; falls back to the reason-only file if rendering fails."""
    try:
        payload = fmt.payload(grading.result) if grading.result is not None else fmt.error_payload(grading.reason)
        fmt.dumps(payload)
    except Exception as exc:
        payload = fmt.error_payload(f"{grading.reason or 'rendering the result failed'} ({type(exc).__name__}: {exc})")
    fmt.write_payload(payload, path)


def print_log(grading: ContainerGrading) -> None:
    """What the instructor sees in the platform's log: the scorecard, or the reason."""
    if grading.result is not None:
        sys.stdout.write(TerminalReporter(color=False).render(grading.result))
    if grading.problem is not None:
        print(f"grader: {grading.problem.value} problem: {grading.reason}")
    sys.stdout.flush()


PLATFORM_PATHS = {"gradescope": ("submission", "results/results.json"), "prairielearn": ("student", "results/results.json")}
"""Where each platform puts the upload and reads the result, below its root."""


def run_container(platform: str, root: Path, exercise: str | None, options: GradingOptions) -> int:
    """The whole container flow: grade the upload, write the platform's file, log; the exit code."""
    fmt = default_plugins().lms_classes[platform]()
    upload, target = PLATFORM_PATHS[platform]
    grading = grade_upload(root / upload, exercise, options)
    write_platform_file(fmt, grading, root / target)
    print_log(grading)
    return grading.exit_code


__all__ = ["ContainerGrading", "Problem", "grade_upload", "print_log", "run_container", "write_platform_file"]
