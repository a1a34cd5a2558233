"""Compiled code: the submission's Triton kernels, as compiled on the GPU, use the instructions a
lab requires (an FP8 lab's tensor-core MMA on e4m3 operands) and none it forbids (the same
matrix products done in bf16 after an upcast: an FP8 lab in name only).

The worker runs the function once, then reads every compiled kernel of the Triton functions the
submission defines from Triton's own cache (their PTX, and their SASS where Triton's bundled
disassembler runs) and reports the distinct matrix instructions of each. Like every report
from the worker it is the submission's process talking; the profile and ghost checks are the
other layers.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from grader.api import Case, CheckContext, Checker, CheckSpec, Hardware, LabManifest, Verdict, case_set_problems


class CompiledCodeOptions(CheckSpec):
    """The matrix instructions of the submission's compiled kernels, against patterns."""

    kind: Literal["compiled-code"] = "compiled-code"
    requires: Hardware = Field(default=Hardware.gpu, description="Compiled code exists only on a GPU.")
    cases: str = Field(description="Case set; the function runs once on its first case before its kernels are read.")
    require: list[str] = Field(
        min_length=1,
        description="Regular expressions over matrix instructions (PTX mnemonics such as "
        "'wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3', or SASS opcodes such as 'QGMMA.64x64x32.F32.E4M3.E4M3'): "
        "some compiled kernel must have an instruction matching one of them.",
    )
    forbid: list[str] = Field(
        default_factory=list, description="Regular expressions no matrix instruction of any compiled kernel may match."
    )

    @field_validator("require", "forbid")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"regular expressions ({pattern!r}: {exc})") from None
        return value

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        return case_set_problems(manifest, self.cases)


def _matches(patterns: list[str], instructions: list[str]) -> list[str]:
    return [i for i in instructions if any(re.search(p, i) for p in patterns)]


class CompiledCodeChecker(Checker):
    name = "compiled-code"
    Options = CompiledCodeOptions

    def run(self, check_id: str, check: CompiledCodeOptions, ctx: CheckContext) -> Verdict:
        case: Case = ctx.cases(check.cases, check_id)[0]
        rows = ctx.submission.code(check.function, case.inputs, check.time_limit_s or 600.0)
        if not rows:
            return Verdict.failed(
                f"{case.label}: no compiled Triton kernel of the submission's own was found after the call: "
                "the work ran elsewhere"
            )
        table: list[dict[str, Any]] = []
        required: list[str] = []
        forbidden: list[str] = []
        for row in rows:
            instructions = row["ptx_mma"] + row["sass_mma"]
            good, bad = _matches(check.require, instructions), _matches(check.forbid, instructions)
            required += [f"{row['kernel']}: {i}" for i in good]
            forbidden += [f"{row['kernel']}: {i}" for i in bad]
            if len(table) < 12:
                table.append(
                    {
                        "kernel": row["kernel"],
                        "ptx_mma": ", ".join(row["ptx_mma"])[:160] or "none",
                        "sass_mma": ", ".join(row["sass_mma"])[:160] or ("none" if row["sass"] else "no SASS here"),
                    }
                )
        kernels = sorted({row["kernel"] for row in rows})
        if forbidden:
            return Verdict.failed(
                f"{case.label}: a forbidden matrix instruction is compiled in ({'; '.join(forbidden[:3])})", table=table
            )
        if not required:
            return Verdict.failed(
                f"{case.label}: none of the submission's compiled kernels ({', '.join(kernels)}) has a matrix instruction "
                f"matching {' or '.join(check.require)}",
                table=table,
            )
        return Verdict.passed(f"{case.label}: compiled as required ({'; '.join(sorted(set(required))[:3])})", table=table)
