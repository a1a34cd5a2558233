"""Grading inside an LMS container: find the upload, grade it officially, always leave a result file.

Both platforms hand the grader a folder of uploaded files and read one JSON file back. Whatever
happens (no gradable file, several candidates, a syntax error, a lab that will not load, no
sandbox, a grader bug, a hang) this module still produces something the platform's format can
render, in time for the platform's own timeout: a result, or a reason when not even the lab
could be loaded. The grading itself is the session's (one path for every caller).

Platform rules kept here: PrairieLearn reads ``results.json`` only when the container exits 0,
so its run always exits 0 once the file is written; an upload that cannot be graded (nothing to
grade, several candidates, a syntax error) is ``gradable: false`` there, so no attempt is used.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from grader import discovery
from grader.discovery import SubmissionFile
from grader.errors import UsageError
from grader.lms.base import LmsFormat
from grader.manifest import Hardware, LabManifest, load_manifest
from grader.plugins import default as default_plugins
from grader.reporters.terminal import TerminalReporter
from grader.results import GradeResult, Problem, Visibility
from grader.seeds import Seeds
from grader.session import Grader, GradingOptions, internal_error, not_gradable

TIMEOUT_ENV = "GRADER_LMS_TIMEOUT_S"
"""The platform's timeout for one grading job, in seconds (PrairieLearn's info.json ``timeout``)."""


@dataclass(frozen=True)
class Platform:
    upload: str
    """Where the upload is, below the container's root."""
    target: str
    """Where the platform reads the result file, below the root."""
    timeout_s: float
    """The platform's default timeout for one job."""
    always_exit_0: bool
    """The platform reads the result file only after a successful exit."""


PLATFORMS = {
    "gradescope": Platform("submission", "results/results.json", 600.0, False),
    "prairielearn": Platform("student", "results/results.json", 30.0, True),
}


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


def points_plan(manifest: LabManifest, platform: str) -> dict[str, list[str]]:
    """Which checks an upload grades and which come later, on a platform without a GPU:
    ``upload``, ``gpu`` (graded later on a GPU machine) and, on PrairieLearn, which releases
    nothing by itself, ``hidden`` (not visible on upload; added later as manual points)."""
    plan: dict[str, list[str]] = {"upload": [], "gpu": [], "hidden": []}
    for cid, check in manifest.checks.items():
        visible = (check.visibility or manifest.lab.visibility) is Visibility.visible
        if check.requires is Hardware.gpu:
            plan["gpu"].append(cid)
        elif platform == "prairielearn" and not visible:
            plan["hidden"].append(cid)
        else:
            plan["upload"].append(cid)
    return plan


def describe_plan(manifest: LabManifest, platform: str) -> list[str]:
    """The plan in sentences, for the TA who builds or configures the autograder."""
    plan = points_plan(manifest, platform)
    points = {k: sum(manifest.checks[c].points for c in v) for k, v in plan.items()}
    lines = [f"{manifest.id}: {points['upload']:g} of {manifest.max_score:g} points are graded on upload"]
    if plan["gpu"]:
        lines.append(
            f"DEFERRED: {points['gpu']:g} points need a GPU ({', '.join(plan['gpu'])}): students see them as pending; "
            "grade them later with `grader batch` (or `grader slurm`) on a GPU machine and upload the scores "
            f"(`grader lms {platform} scores`; docs/lms.md)"
        )
    if plan["hidden"]:
        lines.append(
            f"DEFERRED: {points['hidden']:g} points are hidden on upload ({', '.join(plan['hidden'])}): "
            "PrairieLearn releases nothing by itself, so they are added later as manual points"
        )
    return lines


def deadline_for(timeout_s: float) -> float:
    """The grading's own deadline under a platform timeout: room left to start Python, write the
    file and exit (a fifth of the timeout, at least 5 s)."""
    return max(1.0, timeout_s - max(5.0, 0.2 * timeout_s))


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
            lab_id = discovery.lab_for_file(discovery.read_submission(candidates[0]).text, None, labs, manifests)
        return load_manifest(labs[lab_id], plugins.checkers())
    except UsageError as exc:
        raise _Infra(f"the autograder is misconfigured: {exc}") from None


def _syntax_problem(file: SubmissionFile) -> str | None:
    """Why the file is not Python at all (compiled, never run), for the upload check."""
    try:
        compile(file.data, file.name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{file.name}: SyntaxError at line {exc.lineno}: {exc.msg}; fix it and upload again"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{file.name}: cannot be read as Python ({type(exc).__name__}); fix it and upload again"
    return None


def grade_upload(folder: Path, exercise: str | None, options: GradingOptions) -> ContainerGrading:
    """Grade the one submission in ``folder`` as official grading; never raises."""
    seeds = Seeds.from_env(options.seed)
    manifest: LabManifest | None = None
    try:
        candidates, notes = discovery.python_files(folder) if folder.is_dir() else ([], [])
        manifest = _lab(exercise, candidates)
        try:
            main = discovery.pick_submission(candidates, manifest, "your upload")
            file = discovery.with_helpers(discovery.read_submission(main), main, candidates)
            problem = _syntax_problem(file)
            if problem:
                raise UsageError(problem)
        except UsageError as exc:
            reason = str(exc) + (f" ({'; '.join(notes)})" if notes else "")
            result = not_gradable(manifest, "(none)", "", reason, seeds=seeds, problem=Problem.submission)
            return ContainerGrading(result, Problem.submission, reason)
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
        payload = fmt.error_payload(f"{grading.reason or 'rendering the result failed'} ({internal_error(exc)})")
    fmt.write_payload(payload, path)


def print_log(grading: ContainerGrading) -> None:
    """What the instructor sees in the platform's log: the scorecard, or the reason."""
    if grading.result is not None:
        sys.stdout.write(TerminalReporter(color=False).render(grading.result))
    if grading.problem is not None:
        print(f"grader: {grading.problem.value} problem: {grading.reason}")
    sys.stdout.flush()


def run_container(platform: str, root: Path, exercise: str | None, options: GradingOptions) -> int:
    """The whole container flow: grade the upload under the platform's timeout, write the
    platform's file, log; the exit code the platform needs."""
    rules = PLATFORMS[platform]
    if options.deadline_s is None:
        timeout = rules.timeout_s
        try:
            timeout = float(os.environ.get(TIMEOUT_ENV) or timeout)
        except ValueError:
            pass
        options = dataclasses.replace(options, deadline_s=deadline_for(timeout))
    fmt = default_plugins().lms_classes[platform]()
    grading = grade_upload(root / rules.upload, exercise, options)
    write_platform_file(fmt, grading, root / rules.target)
    print_log(grading)
    return 0 if rules.always_exit_0 else grading.exit_code


__all__ = [
    "PLATFORMS",
    "ContainerGrading",
    "describe_plan",
    "grade_upload",
    "points_plan",
    "print_log",
    "run_container",
    "write_platform_file",
]
