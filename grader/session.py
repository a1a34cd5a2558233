"""Grading one submission: run every check of its lab, collect one GradeResult.

A :class:`Grader` belongs to one lab and may grade many submissions in turn (the batch and the
self-test reuse it, and with it the lab's cached inputs and reference outputs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import traceback
from pathlib import Path

from grader import hardware
from grader.checkers.base import CheckContext, Verdict
from grader.environment import environment
from grader.errors import InfrastructureError
from grader.lab import Lab
from grader.manifest import CheckSpec, Hardware, LabManifest
from grader.plugins import Plugins
from grader.results import CheckResult, GradeResult, SandboxInfo, Status
from grader.sandbox.launchers import Launcher
from grader.seeds import Seeds
from grader.submission import Submission, SubmissionFault, read_submission, sha256


def sandbox_info(launcher: Launcher) -> SandboxInfo:
    return SandboxInfo(mode=launcher.mode, degraded=launcher.degraded, warnings=list(launcher.warnings))


def not_gradable(
    manifest: LabManifest,
    submission: str,
    digest: str,
    reason: str,
    sandbox: SandboxInfo,
    seeds: Seeds | None = None,
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
        started_at=_now(),
    )


def _score(points: float, verdict: Verdict) -> float:
    if verdict.fraction is not None:
        return round(points * min(1.0, max(0.0, verdict.fraction)), 2)
    return points if verdict.status is Status.passed else 0.0


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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Grader:
    """Grades submissions of one lab."""

    def __init__(self, lab: Lab, plugins: Plugins, launcher: Launcher, seeds: Seeds, slot: int = 0) -> None:
        self.lab = lab
        self.manifest = lab.manifest
        self.plugins = plugins
        self.launcher = launcher
        self.seeds = seeds
        self.slot = slot

    def _gpu(self) -> str | None:
        needs = any(c.requires is Hardware.gpu for c in self.manifest.checks.values())
        return hardware.cuda_device() if needs else None

    def grade(self, path: Path, display_name: str | None = None) -> GradeResult:
        """Grade the file at ``path``; raises UsageError only for an unreadable submission."""
        source = read_submission(path)
        name = display_name or Path(path).name
        started = time.monotonic()
        started_at = _now()
        self.plugins.grading_started(self.manifest, Path(path))
        gpu = self._gpu()
        handles: dict[str, Submission] = {}
        results: list[CheckResult] = []
        self._passed: dict[str, bool] = {}
        infra: str | None = None
        try:
            for check_id, check in self.manifest.checks.items():
                t0 = time.monotonic()
                if infra is not None:
                    verdict = Verdict.error(f"not graded: {infra}")
                else:
                    try:
                        verdict = self._run(check_id, check, source, name, gpu, handles)
                        if _near_miss(check, verdict):  # timing noise as likely as a verdict: measure again
                            verdict = _better(verdict, self._run(check_id, check, source, name, gpu, handles), check)
                    except InfrastructureError as exc:
                        infra = str(exc)
                        verdict = Verdict.error(f"not graded: {infra}")
                    except Exception as exc:  # a checker bug must not hide as a student error
                        infra = f"internal error in the {check.kind} checker: {type(exc).__name__}: {exc}"
                        traceback.print_exc()
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
                    hint=check.hint,
                    mismatches=verdict.mismatches,
                    details=verdict.details,
                    table=verdict.table,
                )
                results.append(result)
                self._passed[check_id] = result.status is Status.passed
                self.plugins.check_finished(self.manifest, result)
        finally:
            output = ""
            for handle in handles.values():
                handle.close()
                output += handle.output
        return GradeResult(
            exercise=self.manifest.id,
            submission=name,
            submission_sha256=sha256(source),
            score=round(sum(r.score for r in results), 6),
            max_score=self.manifest.max_score,
            gradable=infra is None,
            checks=results,
            environment=environment(gpu, self.plugins.distributions()),
            sandbox=sandbox_info(self.launcher),
            seed=self.seeds.public,
            official=self.seeds.official,
            error=infra,
            submission_output=output[-4000:],
            duration_s=round(time.monotonic() - started, 3),
            started_at=started_at,
        )

    def _run(
        self, check_id: str, check: CheckSpec, source: bytes, name: str, gpu: str | None, handles: dict[str, Submission]
    ) -> Verdict:
        if check.requires is Hardware.gpu and gpu is None:
            return Verdict.skipped("needs a CUDA GPU and none is available here; it is graded on the GPU machine")
        waiting = [c for c in check.after if self._passed.get(c) is not True]
        if waiting:
            return Verdict.skipped(f"graded once {', '.join(waiting)} passes")
        device = "cuda" if check.requires is Hardware.gpu else "cpu"
        if device not in handles:
            launcher = dataclasses.replace(self.launcher, gpu=device == "cuda")
            handles[device] = Submission(
                source, name, self.manifest, launcher, self.slot, torch_device=device,
            )  # fmt: skip
        handle = handles[device]
        handle.start()
        if handle.import_failure is not None:
            return Verdict.error(handle.import_failure)
        ctx = CheckContext(self.lab, handle, self.seeds, device)
        try:
            return self.plugins.checker(check.kind).run(check_id, check, ctx)
        except SubmissionFault as fault:
            return Verdict(fault.status, fault.message)
