"""CPU performance: the submission beats a slow reference by a factor, timed by the grader.

The submission is timed from the grader's side of the boundary (wall time of the whole call,
input transfer included), on fresh inputs each repetition, after an untimed warm-up; every
timed output is checked against the reference. The baseline is the solution's slow function,
run in the grader's process on the same inputs beside each timed call, so that a busy machine
(a batch running jobs side by side) slows both sides of each pair alike; pairs alternate which
side goes first, so a trend in the load does not favour either. The submission's whole process
tree is frozen while the baseline runs (the sandbox freezes it between calls), so nothing it
started can slow the baseline down; where the freezing is SIGSTOP, a tree that ran anyway (a
timer resumed it) is found after the baseline and the check is an error.

The median of the per-pair ratios decides. A median short of ``margin`` times the requirement,
and not under half of it, is measured again with another round of pairs, up to ``max_rounds``,
and the median of all pairs decides: one unlucky round on a loaded machine no longer fails a
correct submission, a submission just short of the requirement does not pass on one lucky
round, and one that is plainly the slow algorithm is not measured twice. Every round draws
inputs of its own, and so does a second measurement of the whole check (``retry_near``): a
submission that remembers its answers by their inputs would otherwise answer the extra rounds
from memory and pass on them.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Literal

from pydantic import Field

from grader.api import (
    Case,
    CheckContext,
    Checker,
    LabManifest,
    TimedCheckSpec,
    Verdict,
    case_set_problems,
    compare,
    tolerance_problems,
)

WRONG_HINT = "speed counts only for right answers: make this function's correctness checks pass first"


class CpuSpeedupOptions(TimedCheckSpec):
    """The submission is at least `min_speedup` times faster than the solution's `baseline`."""

    kind: Literal["cpu-speedup"] = "cpu-speedup"
    cases: str = Field(description="Case set whose first case sets the size; each repetition draws fresh inputs.")
    baseline: str = Field(description="The solution function to beat (e.g. the per-token loop).")
    min_speedup: float = Field(gt=1, description="Required ratio baseline time / submission time.")
    repeats: int = Field(default=5, ge=3, description="Timed pairs (baseline and submission) in one round.")
    tolerance: str = Field(default="default", description="Tolerance for checking the timed outputs.")
    margin: float = Field(
        default=1.25,
        gt=1,
        description="A median ratio under `min_speedup` times this (and at least half of `min_speedup`) is measured again.",
    )
    max_rounds: int = Field(default=3, ge=1, description="Rounds of `repeats` pairs at most (more only near the requirement).")
    retry_near: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="A whole second measurement of a failure this close to the requirement; off by default, since "
        "the rounds above already measure again anything between half the requirement and `margin` times it.",
    )

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        out = []
        out += case_set_problems(manifest, self.cases)
        if self.cases in manifest.cases and not manifest.cases[self.cases].fixed:
            out.append(("cases", "a case set with a fixed case (its size is what is timed)", repr(self.cases)))
        if self.baseline not in manifest.functions:
            out.append(("baseline", f"one of {sorted(manifest.functions)}", repr(self.baseline)))
        out += tolerance_problems(manifest, self.tolerance)
        return out


PRINTING_NOTE_BYTES = 4096
"""Printing this much while being timed gets a failed speed check the hint that printing did it."""


def _printed(ctx: CheckContext) -> int:
    return int(getattr(ctx.submission, "printed", 0))


class CpuSpeedupChecker(Checker):
    name = "cpu-speedup"
    Options = CpuSpeedupOptions

    def run(self, check_id: str, check: CpuSpeedupOptions, ctx: CheckContext) -> Verdict:
        spec = ctx.manifest.functions[check.function]
        tol = ctx.manifest.tolerance(check.tolerance)
        first_round = ctx.attempt * check.max_rounds
        warm_up = self._draws(ctx, check, check_id, -1 - ctx.attempt)
        ctx.call(check.function, warm_up[0], check.time_limit_s)  # untimed
        printed = _printed(ctx)
        pairs: list[tuple[float, float]] = []
        medians: list[float] = []
        for number in range(first_round, first_round + check.max_rounds):
            for case in self._draws(ctx, check, check_id, number):
                baseline_first = len(pairs) % 2 == 0
                if baseline_first:
                    t_base, answer = self._time_baseline(ctx, check, case)
                got = ctx.call(check.function, case, check.time_limit_s)
                if not baseline_first:
                    t_base, answer = self._time_baseline(ctx, check, case)
                    ctx.submission.check_frozen(check.function)  # (before the next call, its thaw checks too)
                for out in spec.returns:
                    result = compare(out.name, answer[out.name], got[out.name], tol)
                    if not result.ok:
                        return Verdict.failed(
                            f"a timed call gave a wrong answer: {result.message}", mismatches=result.mismatches, hint=WRONG_HINT
                        )
                pairs.append((t_base, got.wall_s))
            medians.append(statistics.median(b / s for b, s in pairs if s > 0))
            if not check.min_speedup / 2 <= medians[-1] < check.min_speedup * check.margin:
                break  # clearly passing, or clearly not the right algorithm (under half the speed needed)
        ratio = medians[-1]
        t_base = statistics.median(b for b, _ in pairs)
        t_sub = statistics.median(s for _, s in pairs)
        dims = ", ".join(f"{k}={v}" for k, v in warm_up[0].dims.items())
        details = {
            "baseline_ms": round(t_base * 1e3, 3),
            "submission_ms": round(t_sub * 1e3, 3),
            "speedup": round(ratio, 2),
            "required": check.min_speedup,
            "pairs": len(pairs),
            "rounds": len(medians),
            "first_round_speedup": round(medians[0], 2),
        }
        measured = f"median of {len(pairs)} paired runs" + (f" in {len(medians)} rounds, being near {check.min_speedup:g}x" if len(medians) > 1 else "")
        summary = (
            f"{check.function} took {t_sub * 1e3:.2f} ms (measured from the grader), "
            f"{check.baseline} {t_base * 1e3:.2f} ms at {dims}: {ratio:.1f}x faster ({measured}), "
            f"{check.min_speedup:g}x needed"
        )
        margin = ratio / check.min_speedup - 1
        if ratio >= check.min_speedup:
            return Verdict.passed(summary, details=details, margin=margin)
        printed = _printed(ctx) - printed
        if printed >= PRINTING_NOTE_BYTES:
            details["printed_bytes"] = printed
            note = (
                f"{check.function} printed {printed} bytes during its {len(pairs)} timed calls, and printing is timed "
                "with it (every line crosses a pipe): remove the prints and measure again"
            )
            return Verdict.failed(summary, details=details, margin=margin, hint=f"{note}. {check.hint}".strip())
        return Verdict.failed(summary, details=details, margin=margin)

    @staticmethod
    def _draws(ctx: CheckContext, check: CpuSpeedupOptions, check_id: str, number: int) -> list[Case]:
        """Round ``number``'s inputs: ``repeats`` draws of the case set's first case, none of them
        drawn for another round (a negative number: one warm-up draw). Cached per process (a
        batch reuses them)."""
        key = (check_id, ctx.seeds.key, "timing", number)
        if key not in ctx.lab.cache:
            spec = ctx.manifest.cases[check.cases]
            dims = dict(spec.fixed[0])
            generator = ctx.lab.support_function(spec.generator)
            indices = [number] if number < 0 else range(number * check.repeats, (number + 1) * check.repeats)
            ctx.lab.cache[key] = [
                Case(check.cases, n, len(indices), dims, dict(generator(ctx.rng(check_id, "timing", i), **dims, **spec.params)))
                for n, i in enumerate(indices)
            ]
        return ctx.lab.cache[key]

    @staticmethod
    def _time_baseline(ctx: CheckContext, check: CpuSpeedupOptions, case: Case) -> tuple[float, dict[str, Any]]:
        """The baseline's time on ``case`` and its answer (what the timed call must match)."""
        started = time.perf_counter()
        answer = ctx.lab.call_solution(check.baseline, case.inputs)
        return time.perf_counter() - started, answer
