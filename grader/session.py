"""Grading: the one path from a submitted file to a result and its reports.

Every caller (``grader submit``, the batch workers, the LMS containers, ``grader selftest`` and
the labs' pytest tests) takes what was handed in through the one intake
(:mod:`grader.discovery`) and grades it through :func:`grade_file` (or
:meth:`Grader.grade_file`, to grade many with one grader). This module owns what must be the
same everywhere: the sandbox tier is chosen (and refused for official grading when degraded);
every check runs under the grading's overall deadline; whatever the grader itself cannot do
becomes a not-gradable result instead of an exception; the reports are written atomically; the
finished hook fires once per submission, reports or not.

A :class:`Grader` belongs to one lab and may grade many submissions in turn (the batch and the
self-test reuse it, and with it the lab's cached inputs and reference outputs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grader import gpu_cache, hardware
from grader.checkers.base import CheckContext, Verdict
from grader.discovery import SubmissionFile, intake
from grader.environment import environment, requirements_problem
from grader.errors import InfrastructureError, OutputError, UsageError
from grader.lab import Lab
from grader.manifest import CheckSpec, Hardware, LabManifest
from grader.plugins import Plugins
from grader.plugins import default as default_plugins
from grader.results import CheckResult, GradeResult, LeaderboardEntry, Problem, SandboxInfo, Status, Visibility
from grader.sandbox import tiers
from grader.sandbox.client import Submission
from grader.sandbox.launchers import Launcher
from grader.sandbox.values import SubmissionFault
from grader.seeds import Seeds

DEBUG_ENV = "GRADER_DEBUG"
PENDING = "pending: needs a CUDA GPU and none is available here; graded later on a GPU machine"
NO_WORKER = SandboxInfo(mode="none", degraded=True, warnings=["no worker was started"])


@dataclasses.dataclass(frozen=True)
class GradingOptions:
    """How to grade: what a caller parsed from its own inputs (flags, a config, an environment)."""

    seed: int | None = None
    """The public seed of the inputs (None: the lab's fixed seed). The secret part comes from the environment."""
    sandbox: str = "auto"
    """The isolation tier: 'auto' for the strongest that starts here, or a tier's name."""
    official: bool = False
    """Official grading (LMS, batch): refuse a tier that does not keep solutions, seed and network out of reach."""
    allow_unsandboxed: bool = False
    """Let official grading run in a degraded tier anyway (said loudly in the result)."""
    deadline_s: float | None = None
    """Wall-clock limit of the whole grading (None: the manifest's ``lab.deadline_s``)."""
    slot: int = 0
    """Which worker slot this grading uses (concurrent gradings in one batch use different slots)."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _score(points: float, verdict: Verdict) -> float:
    if verdict.fraction is not None:
        return round(points * min(1.0, max(0.0, verdict.fraction)), 2)
    return points if verdict.status is Status.passed else 0.0


def _leaderboard(check: CheckSpec, verdict: Verdict) -> list[LeaderboardEntry]:
    """The measured numbers a check publishes, when it measured them (passed or failed)."""
    if verdict.status not in (Status.passed, Status.failed):
        return []
    out = []
    for key, order in check.leaderboard.items():
        value = verdict.details.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(LeaderboardEntry(name=key, value=float(value), order=order))
    return out


def sandbox_info(launcher: Launcher) -> SandboxInfo:
    return SandboxInfo(
        mode=launcher.mode,
        degraded=launcher.degraded,
        warnings=list(launcher.warnings),
        official_ok=launcher.official_ok,
        guarantees=list(launcher.guarantees),
    )


def not_gradable(
    manifest: LabManifest,
    submission: str,
    digest: str,
    reason: str,
    sandbox: SandboxInfo = NO_WORKER,
    seeds: Seeds | None = None,
    problem: Problem = Problem.infrastructure,
) -> GradeResult:
    """A valid result that says the grader could not grade, with every check at 0."""
    checks = [
        CheckResult(
            id=cid, title=c.title, function=c.function, kind=c.kind, status=Status.error, score=0.0,
            max_score=c.points, message=f"not graded: {reason}",
            visibility=c.visibility or manifest.lab.visibility,
        )
        for cid, c in manifest.checks.items()
    ]  # fmt: skip
    return GradeResult(
        exercise=manifest.id,
        submission=submission,
        submission_sha256=digest,
        score=0.0,
        max_score=manifest.max_score,
        gradable=False,
        checks=checks,
        environment=environment(),
        sandbox=sandbox,
        seed=seeds.public if seeds else None,
        official=bool(seeds and seeds.official),
        error=reason,
        problem=problem,
        started_at=_now(),
    )


def _near_miss(check: CheckSpec, verdict: Verdict) -> bool:
    """A failed measurement within the check's ``retry_near`` of its requirement (timed kinds only)."""
    near = getattr(check, "retry_near", 0.0)
    return verdict.status is Status.failed and verdict.margin is not None and -near <= verdict.margin < 0


def _better(first: Verdict, second: Verdict, check: CheckSpec) -> Verdict:
    """The better of two measurements of one check, saying that it was measured twice."""

    def rank(v: Verdict) -> tuple[bool, float, float]:
        fraction = v.fraction if v.fraction is not None else float(v.status is Status.passed)
        return (v.status is Status.passed, fraction, v.margin if v.margin is not None else float("-inf"))

    assert first.margin is not None
    chosen = second if rank(second) > rank(first) else first
    note = (
        f"measured twice: the first measurement fell {-first.margin:.1%} short of the requirement "
        f"(within retry_near = {getattr(check, 'retry_near', 0.0):g}); the better one counts"
    )
    return dataclasses.replace(
        chosen,
        message=f"{chosen.message} ({note})",
        details={**chosen.details, "measurements": 2, "first_margin": round(first.margin, 4)},
    )


class Background:
    """A call run in a thread of this process, whose exception the joiner gets back.

    With ``linger`` the thread outlives the call until :meth:`release`: a worker started from a
    thread dies with that thread, not with the process (bubblewrap's ``--die-with-parent`` and
    the keeper's ``PR_SET_PDEATHSIG`` follow the thread that forked them), so the thread that
    starts a worker must live as long as the worker does."""

    def __init__(self, fn: Callable[[], Any], linger: bool = False) -> None:
        self._error: BaseException | None = None
        self.result: Any = None
        self._finished = threading.Event()
        self._released = threading.Event()

        def body() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever joins
                self._error = exc
            finally:
                self._finished.set()
            if linger:
                self._released.wait()

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()

    def join(self) -> Any:
        """Wait for the call; raise what it raised."""
        self._finished.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self.result

    def release(self) -> None:
        """Let a lingering thread end (once what it started is gone)."""
        self._released.set()
        self._thread.join()


def grading_order(manifest: LabManifest) -> list[tuple[int, str, CheckSpec]]:
    """The checks in the order they are graded, each with its worker group: 0 the visible checks,
    1 those a student may not see yet (hidden, after the due date, after publishing), 2 visible
    checks that wait for one of those. Manifest order within a group. Each group gets a fresh
    worker, run in this order, so nothing a later visible check shows (an exception, a wrong
    answer) can carry the inputs of a check the student may not see: that worker never saw them."""
    default = manifest.lab.visibility
    group: dict[str, int] = {}
    for cid, c in manifest.checks.items():  # `after` names earlier checks only, so one pass settles it
        late = (c.visibility or default) is not Visibility.visible
        group[cid] = 1 if late else 2 if any(group.get(a, 0) > 0 for a in c.after) else 0
    return sorted(((group[cid], cid, c) for cid, c in manifest.checks.items()), key=lambda entry: entry[0])


def _close(handles: dict[str, Submission]) -> str:
    """Close the workers (one per device) and forget them; what they printed."""
    output = ""
    for handle in handles.values():
        handle.close()
        output += handle.output
    handles.clear()
    return output


def internal_error(exc: BaseException) -> str:
    """A grader bug in one line: the exception and the innermost frame of the grader's own code."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if "/grader/" in frame.filename:
            where = f" ({Path(frame.filename).name}:{frame.lineno})"
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(exc, file=sys.stderr)
    return f"internal error: {type(exc).__name__}: {exc}{where}"


class Grader:
    """Grades submissions of one lab."""

    def __init__(
        self,
        lab: Lab | LabManifest,
        options: GradingOptions | None = None,
        plugins: Plugins | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self.lab = lab if isinstance(lab, Lab) else Lab(lab)
        self.manifest = self.lab.manifest
        self.options = options or GradingOptions()
        self.plugins = plugins or default_plugins()
        self.seeds = Seeds.from_env(self.options.seed)
        self._launcher = launcher
        self._missing: str | None = None
        self._passed: dict[str, bool] = {}
        self._kernels: Path | None = None
        self._pending: dict[str, Background] = {}
        self._starters: list[Background] = []

    @property
    def deadline_s(self) -> float:
        return self.options.deadline_s or self.manifest.lab.deadline_s

    def launcher(self) -> Launcher:
        """The sandbox tier for this grader's submissions, chosen once; InfrastructureError if none
        fits, or if this environment lacks a distribution the lab needs (``lab.requires``: the
        installation's problem, said before anything is graded, never a student's zero)."""
        if self._missing is None:
            self._missing = requirements_problem(self.manifest.id, self.manifest.lab.requires) or ""
        if self._missing:
            raise InfrastructureError(self._missing)
        if self._launcher is None:
            o = self.options
            self._launcher = tiers.choose(
                o.sandbox, o.official, o.allow_unsandboxed, self.manifest.directory, self.manifest.lab.worker.memory_mb
            )
        return self._launcher

    def grade_file(self, submission: SubmissionFile | Path, out: Path | None = None) -> GradeResult:
        """Grade one submission and, with ``out``, write its reports there (checked before grading);
        the finished hook fires either way."""
        if out is not None:
            prepare_out(out)
        result = self.grade(submission)
        if out is not None:
            write_reports(result, out, self.plugins)
        else:
            self.plugins.grading_finished(result, None)
        return result

    def grade(self, submission: SubmissionFile | Path) -> GradeResult:
        """Grade one submission (a path goes through the intake first). Raises UsageError only
        when a path holds no submission; anything else the grader cannot do becomes a
        not-gradable result. Callers use :meth:`grade_file`, which also reports."""
        file = submission if isinstance(submission, SubmissionFile) else intake(submission, self.manifest)
        self.plugins.grading_started(self.manifest, Path(file.name))
        try:
            launcher = self.launcher()
        except InfrastructureError as exc:
            return not_gradable(self.manifest, file.name, file.sha256, str(exc), NO_WORKER, self.seeds)
        try:
            return self._grade(file, launcher)
        except InfrastructureError as exc:
            return not_gradable(self.manifest, file.name, file.sha256, str(exc), sandbox_info(launcher), self.seeds)
        except Exception as exc:  # a grader bug: the caller still gets a valid result that says so
            reason = internal_error(exc)
            return not_gradable(self.manifest, file.name, file.sha256, reason, sandbox_info(launcher), self.seeds)

    def _grade(self, file: SubmissionFile, launcher: Launcher) -> GradeResult:
        started = time.monotonic()
        started_at = _now()
        deadline = started + self.deadline_s
        gpu = hardware.cuda_device() if any(c.requires is Hardware.gpu for c in self.manifest.checks.values()) else None
        handles: dict[str, Submission] = {}
        results: list[CheckResult] = []
        self._passed = {}
        infra: str | None = None
        output = ""
        current = 0
        try:
            order = grading_order(self.manifest)
            if gpu is not None and gpu_cache.enabled() and any(g == 0 and c.requires is Hardware.gpu for g, _, c in order):
                self._get_gpu_ready(file, launcher, handles, deadline)
            for group, check_id, check in order:
                if group != current:  # the next group's checks get a fresh worker
                    self._settle_pending()
                    output += _close(handles)
                    current = group
                t0 = time.monotonic()
                if infra is not None:
                    verdict = Verdict.error(f"not graded: {infra}")
                elif check.requires is Hardware.gpu and gpu is None:
                    verdict = Verdict.skipped(PENDING, deferred=True)
                elif t0 >= deadline:
                    verdict = Verdict.error(f"not run: the grading's overall deadline of {self.deadline_s:g} s passed")
                else:
                    try:
                        verdict = self._run(check_id, check, file, launcher, gpu, handles, deadline)
                        if _near_miss(check, verdict) and time.monotonic() < deadline:
                            # timing noise is as likely as a verdict this close: measure again
                            again = self._run(check_id, check, file, launcher, gpu, handles, deadline, attempt=1)
                            verdict = _better(verdict, again, check)
                    except InfrastructureError as exc:
                        infra = str(exc)
                        verdict = Verdict.error(f"not graded: {infra}")
                    except Exception as exc:  # a checker bug must not hide as a student error
                        infra = f"{check.kind} checker: {internal_error(exc)}"
                        verdict = Verdict.error(f"not graded: {infra}")
                result = CheckResult(
                    id=check_id,
                    title=check.title,
                    function=check.function,
                    kind=check.kind,
                    status=verdict.status,
                    score=_score(check.points, verdict),
                    max_score=check.points,
                    message=verdict.message,
                    visibility=check.visibility or self.manifest.lab.visibility,
                    duration_s=round(time.monotonic() - t0, 4),
                    hint=check.hint if verdict.hint is None else verdict.hint,
                    mismatches=verdict.mismatches,
                    details=verdict.details,
                    table=verdict.table,
                    traceback=verdict.traceback,
                    deferred=verdict.deferred,
                    leaderboard=_leaderboard(check, verdict),
                )
                results.append(result)
                self._passed[check_id] = result.status is Status.passed
                self.plugins.check_finished(self.manifest, result)
        finally:
            self._settle_pending()
            output += _close(handles)
            for starter in self._starters:  # only now: the workers they started are gone
                starter.release()
            self._starters = []
        order_ids = list(self.manifest.checks)
        results.sort(key=lambda r: order_ids.index(r.id))
        return GradeResult(
            exercise=self.manifest.id,
            submission=file.name,
            submission_sha256=file.sha256,
            score=round(sum(r.score for r in results), 6),
            max_score=self.manifest.max_score,
            gradable=infra is None,
            checks=results,
            environment=environment(gpu, self.plugins.distributions()),
            sandbox=sandbox_info(launcher),
            seed=self.seeds.public,
            official=self.seeds.official,
            error=infra,
            problem=Problem.infrastructure if infra else None,
            helper_files=sorted(file.helpers),
            submission_output=output[-4000:],
            duration_s=round(time.monotonic() - started, 3),
            started_at=started_at,
        )

    def _settle_pending(self) -> None:
        """Wait for what runs in the background (the reference's warm-up, a worker's start): a
        worker is never closed while it is still starting."""
        for pending in self._pending.values():
            try:
                pending.join()
            except Exception:  # noqa: BLE001 - the checks that needed it reported what mattered
                pass
        self._pending = {}

    def _get_gpu_ready(self, file: SubmissionFile, launcher: Launcher, handles: dict[str, Submission], deadline: float) -> None:
        """While the CPU checks run: compile the reference's kernels into the folder the GPU worker
        reads through (grader/gpu_cache.py), calibrate, and start the GPU worker (importing
        torch and the submission). The GPU checks wait for both (``_run``); nothing is timed
        while they run."""
        self._kernels = gpu_cache.reference_kernels(self.lab.directory / "solution.py", hardware.device_identity())
        gpu_cache.use_for_this_process(self._kernels)
        gpu_checks = {cid: c for cid, c in self.manifest.checks.items() if c.requires is Hardware.gpu}
        self.lab.support, self.lab.solution  # imported here, not in two threads at once  # noqa: B018
        self._pending["warm"] = Background(lambda: gpu_cache.warm_reference(self.lab, self.seeds, gpu_checks, self.plugins))
        handles["cuda"] = self._handle(file, launcher, "cuda", deadline)
        self._pending["cuda"] = Background(handles["cuda"].start, linger=True)
        self._starters.append(self._pending["cuda"])

    def _handle(self, file: SubmissionFile, launcher: Launcher, device: str, deadline: float) -> Submission:
        gpu = device == "cuda"
        kernels = str(self._kernels) if gpu and self._kernels is not None else None
        return Submission(
            file.data, file.name, self.manifest, dataclasses.replace(launcher, gpu=gpu, reference_kernels=kernels),
            self.options.slot, torch_device=device, deadline=deadline, helpers=file.helpers,
        )  # fmt: skip

    def _run(
        self,
        check_id: str,
        check: CheckSpec,
        file: SubmissionFile,
        launcher: Launcher,
        gpu: str | None,
        handles: dict[str, Submission],
        deadline: float,
        attempt: int = 0,
    ) -> Verdict:
        waiting = [c for c in check.after if self._passed.get(c) is not True]
        if waiting:
            return Verdict.skipped(f"graded once {', '.join(waiting)} passes")
        device = "cuda" if check.requires is Hardware.gpu else "cpu"
        if device == "cuda":
            warm = self._pending.pop("warm", None)
            if warm is not None:
                problems = warm.join()
                if problems and os.environ.get(DEBUG_ENV):
                    print("reference warm-up: " + "; ".join(problems), file=sys.stderr)
        if device in self._pending:
            self._pending.pop(device).join()  # its InfrastructureError is this check's
        if device not in handles:
            handles[device] = self._handle(file, launcher, device, deadline)
        handle = handles[device]
        handle.start()
        if handle.import_failure is not None:
            return Verdict.error(handle.import_failure, hint="", traceback=handle.import_traceback)
        ctx = CheckContext(self.lab, handle, self.seeds, device, attempt)
        try:
            return self.plugins.checker(check.kind).run(check_id, check, ctx)
        except SubmissionFault as fault:
            # A wrong kind of answer keeps the check's hint; a crash, a hang or a raise has its own message.
            hint = None if fault.status is Status.failed else fault.hint
            return Verdict(fault.status, fault.message, hint=hint, traceback=fault.traceback)


# --- reports -----------------------------------------------------------------------------------


def prepare_out(out: Path) -> Path:
    """Make sure reports can be written to ``out`` before anything is graded (UsageError if not)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; pass another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputError(f"{out}: cannot write reports there ({exc.strerror or exc})") from None
    return out


def write_reports(result: GradeResult, out: Path, plugins: Plugins | None = None) -> None:
    """Every file reporter's output for ``result`` in ``out`` (each file whole or absent, never
    half-written), then the finished hook. A reporter that fails does not stop the others; the
    failure is raised afterwards as InfrastructureError."""
    plugins = plugins or default_plugins()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write reports there ({exc.strerror or exc})") from None
    failures = []
    for name, cls in plugins.reporter_classes.items():
        if cls.filename is None:
            continue
        try:
            cls().write(result, out)
        except OSError as exc:  # the folder, not the reporter: full, read-only, gone
            raise OutputError(f"{out}: cannot write reports there ({exc.strerror or exc})") from None
        except Exception as exc:
            failures.append(f"the {name} reporter failed: {internal_error(exc)}")
    plugins.grading_finished(result, out)
    if failures:
        raise InfrastructureError("; ".join(failures))


def grade_file(
    submission: SubmissionFile | Path,
    lab: Lab | LabManifest,
    options: GradingOptions | None = None,
    out: Path | None = None,
    plugins: Plugins | None = None,
) -> GradeResult:
    """Grade one submission of ``lab`` and, with ``out``, write its reports there (checked before
    grading): what every entry point calls, once per submission."""
    return Grader(lab, options, plugins).grade_file(submission, out)


def refused(
    lab: Lab | LabManifest, reason: str, options: GradingOptions | None = None, problem: Problem = Problem.submission
) -> GradeResult:
    """The result for an upload that was not graded, for a platform that needs a result for
    every upload: by default one that holds no submission (nothing to grade, several
    candidates, a file for another lab: the student's to fix, ``problem: submission``); every
    check at 0, the reason once. The platform's format decides what the student sees of it."""
    manifest = lab.manifest if isinstance(lab, Lab) else lab
    seeds = Seeds.from_env((options or GradingOptions()).seed)
    return not_gradable(manifest, "(none)", "", reason, seeds=seeds, problem=problem)
