"""Ghost replay: the submission's own Triton kernels must do the work.

The function runs once more with every Triton kernel the submission defines turned into a
no-op (in the worker). If the answer is still right, the kernels were decorative and the real
work happened elsewhere (torch, numpy). Each case uses fresh inputs, so an output buffer that
happens to hold an earlier call's answer cannot pass for this one's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from grader.api import CheckContext, Checker, SubmissionFault, Verdict, compare
from grader.checkers.oracle import OracleOptions


class GhostOptions(OracleOptions):
    """Run the cases with the submission's Triton kernels disabled; the answers must then be wrong."""

    kind: Literal["kernels-do-work"] = "kernels-do-work"  # type: ignore[assignment]
    unordered_rows_by: None = Field(default=None, description="Not used by this check.")


class GhostChecker(Checker):
    name = "kernels-do-work"
    Options = GhostOptions

    def run(self, check_id: str, check: GhostOptions, ctx: CheckContext) -> Verdict:
        spec = ctx.manifest.functions[check.function]
        if not ctx.submission.defines(check.function):
            return Verdict.error(ctx.submission.import_failure or f"the submission defines no function {check.function}")
        cases = ctx.cases(check.cases, check_id)
        for case in cases:
            expected = ctx.reference(check.function, case, check_id, check.reference, check.reference_args)
            try:
                got = ctx.call(check.function, case, check.time_limit_s, noop_kernels=True).values
            except SubmissionFault:
                continue  # without its kernels it cannot even produce an answer: they matter
            still_right = all(
                compare(o.name, expected[o.name], got[o.name], ctx.manifest.tolerance(check.tolerance.get(o.name, "default"))).ok
                for o in spec.returns
            )
            if still_right:
                return Verdict.failed(
                    f"{case.label}: with its Triton kernels switched off, {check.function} still returns the right "
                    "answer, so the work is done outside them (torch, numpy); the kernels are decoration"
                )
        return Verdict.passed(f"with the Triton kernels switched off the answer is wrong on all {len(cases)} cases: they do the work")
