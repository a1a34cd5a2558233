"""GPU checks: speed relative to the reference, and a profile of whose kernels do the work.

Timing follows the practice of GPU kernel contests (docs/lab-05-gpu.md). The submission is timed by the harness in its worker
(warm-up calls on their own inputs, an L2 flush before every timed call, fresh inputs for every
timed call, a device-wide synchronise before each end event); the reference solution is timed
by the same harness in the grader's own process, on the same inputs, in the same run, on the
same GPU, so the score (a ratio of the two) means the same on any GPU. Every timed output is
re-checked by fingerprint against the reference's, and a time under the floor the GPU's
datasheet allows is rejected as impossible (grader/hardware.py). The "% of roofline" shown
beside the times is relative to rates measured on that GPU in this process.

What this cannot prove: the harness shares its process with the submission, so a submission
that patches torch's timers or profiler inside its own process could lie to them. The
fingerprints, the floor, the static rule check and the ghost replay are the layers that make
such a lie hard to profit from; docs/lab-05-gpu.md says more.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Literal

from pydantic import Field

from grader import hardware
from grader.api import (
    Case,
    CheckContext,
    Checker,
    CheckSpec,
    Hardware,
    LabManifest,
    TimedCheckSpec,
    Verdict,
    case_set_problems,
    support_function_problems,
)
from grader.checkers.speedup import WRONG_HINT
from grader.errors import InfrastructureError
from grader.sandbox.boot import gpu as harness

# Kernel-name fragments of library matrix products (cuBLAS, cuBLASLt's nvjet, CUTLASS, torch's
# own, Inductor's Triton templates), as torch.profiler names them.
LIBRARY_GEMM = (
    "nvjet", "gemm", "gemv", "cutlass", "cublas", "xmma", "wgmma", "sm90_", "sm80_", "sm100_", "matmul",
    "splitkreduce", "kernel2", "dot_kernel", "triton_tem",
)  # fmt: skip


class GpuSpeedOptions(TimedCheckSpec):
    """Speed on the GPU relative to the reference solution, per graded shape."""

    kind: Literal["gpu-speed"] = "gpu-speed"
    requires: Hardware = Field(default=Hardware.gpu, description="GPU checks are skipped without CUDA.")
    cases: str = Field(description="The graded shapes (a key of [cases]).")
    reference: str | None = Field(default=None, description="The solution function timed as the yardstick.")
    fresh: str = Field(description="lab.py function(rng, inputs) -> inputs with fresh activations, for each warm-up and timed call.")
    work: str = Field(
        description="lab.py function(inputs) -> (FLOPs, bytes a call must move at least, dtype of its matrix math): "
        "the roofline of one call, against the GPU's datasheet (the floor) and its measured rates (% of roofline)."
    )
    repeats: int = Field(default=10, ge=5, description="Timed calls per shape, each on fresh inputs.")
    warmup: int = Field(default=3, ge=1, description="Untimed warm-up calls per shape, each on its own fresh inputs.")
    target: float = Field(
        default=0.9, gt=0, le=1, description="Geometric-mean speed ratio (reference time / submission time) for full marks."
    )
    fingerprint_rtol: float = Field(default=2e-2, gt=0, description="How far a timed output's fingerprint may drift.")

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        out = support_function_problems(manifest, self.fresh, "fresh") + support_function_problems(manifest, self.work, "work")
        return out + case_set_problems(manifest, self.cases)


def _fingerprints_agree(a: list[float], b: list[float], rtol: float) -> bool:
    """sum(|x|) and sum(x^2) within rtol (the plain sum can be near zero, so it is not compared)."""
    return all(abs(x - y) <= rtol * max(abs(y), 1e-12) for x, y in zip(a[1:], b[1:]))


def floor_verdict(label: str, times_us: list[float], floor_us: float, gpu: str, limits: hardware.Ceilings) -> Verdict | None:
    """An error when any timed call beat the floor of the GPU's ceilings (no correct call can), else None."""
    fastest = min(times_us)
    if fastest >= floor_us:
        return None
    return Verdict.error(
        f"{label}: a timed call took {fastest:.1f} us, under the {floor_us:.1f} us that the {gpu} allows at most "
        f"({hardware.SAFETY:.0%} of max(FLOPs / peak rate, bytes / bandwidth), {limits.source}); no correct "
        "kernel can be that fast, so the timing cannot be trusted"
    )


class GpuSpeedChecker(Checker):
    name = "gpu-speed"
    Options = GpuSpeedOptions

    def run(self, check_id: str, check: GpuSpeedOptions, ctx: CheckContext) -> Verdict:
        fresh = ctx.lab.support_function(check.fresh)
        work_fn = ctx.lab.support_function(check.work)
        reference = ctx.lab.implementation(check.function, check.reference)
        limit = check.time_limit_s or 600.0
        gpu = hardware.cuda_device() or "GPU"
        cases = ctx.cases(check.cases, check_id)
        works = [work_fn(case.inputs) for case in cases]
        measured = hardware.measured_ceilings(tuple({str(w[2]) for w in works}))
        limits = hardware.datasheet_ceilings(gpu, lambda: measured)
        rows: list[dict[str, Any]] = []
        ratios: list[float] = []
        for case, (flops, nbytes, dtype) in zip(cases, works):
            verdict = self._time_case(check_id, check, ctx, case, fresh, reference, limit)
            if isinstance(verdict, Verdict):
                return verdict
            times, ref_times = verdict
            floor_us = limits.floor_us(flops, nbytes, dtype)
            if min(ref_times) < floor_us:
                raise InfrastructureError(
                    f"the reference solution ran {case.label} in {min(ref_times):.1f} us on the {gpu}, under the floor of "
                    f"{floor_us:.1f} us from {limits.source}: those ceilings are wrong for this GPU"
                )
            impossible = floor_verdict(case.label, times, floor_us, gpu, limits)
            if impossible is not None:
                return impossible
            t_sub, t_ref = statistics.median(times), statistics.median(ref_times)
            roofline_us = measured.roofline_us(flops, nbytes, dtype)
            q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), t_sub, max(times)]
            ratios.append(t_ref / t_sub)
            rows.append(
                {
                    "shape": ", ".join(f"{k}={v}" for k, v in case.dims.items()),
                    "reference_us": round(t_ref, 1),
                    "submission_us": round(t_sub, 1),
                    "iqr_us": round(q[2] - q[0], 1),
                    "speed_vs_reference": round(t_ref / t_sub, 3),
                    "roofline_us": round(roofline_us, 1),
                    "pct_of_roofline": round(100 * roofline_us / t_sub, 1),
                    "floor_us": round(floor_us, 1),
                    "tflops": round(flops / t_sub / 1e6, 1),
                    "gbps": round(nbytes / t_sub / 1e3, 1),
                }
            )
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        fraction = min(1.0, geomean / check.target)
        message = (
            f"on the {gpu}: speed {geomean:.2f}x the reference's, timed in the same run (geometric mean over {len(rows)} "
            f"shapes, {check.target:g}x or better earns full marks): {fraction * 100:.0f}% of the points"
        )
        details: dict[str, Any] = {"geomean_speed_vs_reference": round(geomean, 3), "fraction": round(fraction, 3)}
        details.update(hardware.gpu_facts())
        details.update(limits.describe("floor"))
        details["floor_safety"] = hardware.SAFETY
        details.update(measured.describe("measured"))
        status = Verdict.passed if fraction >= 1.0 else Verdict.failed
        return status(message, table=rows, details=details, fraction=fraction, margin=geomean / check.target - 1)

    def _time_case(
        self, check_id: str, check: GpuSpeedOptions, ctx: CheckContext, case: Case, fresh: Any, reference: Any, limit: float
    ) -> tuple[list[float], list[float]] | Verdict:
        """Submission and reference times of one shape (warm-up calls on inputs of their own, then
        one fresh set per timed call), or a failed verdict when a timed answer is wrong."""
        warm = [fresh(ctx.rng(check_id, case.index, "warmup", i), case.inputs) for i in range(check.warmup)]
        timed = [fresh(ctx.rng(check_id, case.index, "timed", i), case.inputs) for i in range(check.repeats)]
        sets = warm + timed
        ref_args = [ctx.lab.arguments(check.function, s, ctx.device) for s in sets]
        ref_times, ref_prints = harness.time_calls(reference, ref_args, warmup=len(warm), budget_s=60.0)
        del ref_args
        times, prints, wall = ctx.submission.time(check.function, sets, limit, warmup=len(warm), budget_s=60.0)
        for i, (got, want) in enumerate(zip(prints, ref_prints)):
            if not _fingerprints_agree(got, want, check.fingerprint_rtol):
                return Verdict.failed(
                    f"{case.label}: timed call {i + 1} returned a different answer from the reference's", hint=WRONG_HINT
                )
        if sum(times) > wall * 1e6:
            return Verdict.error(f"{case.label}: the worker reported more time than passed on the grader's clock")
        return times, ref_times


class GpuProfileOptions(CheckSpec):
    """The profiler shows the submission's own Triton kernels carrying the work."""

    kind: Literal["gpu-profile"] = "gpu-profile"
    requires: Hardware = Field(default=Hardware.gpu, description="GPU checks are skipped without CUDA.")
    cases: str = Field(description="Case set; its first case is profiled.")
    min_share: float = Field(default=0.8, gt=0, le=1, description="Least share of GPU time in the submission's own kernels.")
    max_library_gemm_share: float = Field(
        default=0.0, ge=0, le=1,
        description="Most share of GPU time in library GEMM kernels (cuBLAS, cuBLASLt, CUTLASS); 0 rejects any.",
    )

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        return case_set_problems(manifest, self.cases)


def _category(name: str, own: list[str]) -> str:
    """'submission' (a kernel the submission defines), 'library GEMM' or 'other', by kernel name."""
    if any(name == k or name.startswith(k + "_") or name.startswith(k + "(") for k in own):
        return "submission"
    lowered = name.lower()
    if any(t.lower() in lowered for t in LIBRARY_GEMM):
        return "library GEMM"
    return "other"


class GpuProfileChecker(Checker):
    name = "gpu-profile"
    Options = GpuProfileOptions

    def run(self, check_id: str, check: GpuProfileOptions, ctx: CheckContext) -> Verdict:
        case: Case = ctx.cases(check.cases, check_id)[0]
        rows, own = ctx.submission.profile(check.function, case.inputs, check.time_limit_s or 600.0)
        if not rows:
            return Verdict.error(
                f"{case.label}: the profiler recorded no GPU kernels in the profiled calls (repeats of the warm-up "
                "calls' inputs): either the answers came from memory, not from kernels, or CUPTI is unavailable"
            )
        total = sum(r["device_time_us"] for r in rows) or 1.0
        shares: dict[str, float] = {"submission": 0.0, "library GEMM": 0.0, "other": 0.0}
        table = []
        for r in rows:
            cat = _category(r["name"], own)
            shares[cat] += r["device_time_us"] / total
            if len(table) < 12:
                table.append(
                    {
                        "kernel": r["name"][:90],
                        "category": cat,
                        "device_time_us": r["device_time_us"],
                        "calls": r["calls"],
                        "share_pct": round(100 * r["device_time_us"] / total, 1),
                    }
                )
        summary = (
            f"{case.label}, on the {hardware.cuda_device() or 'GPU'}: {shares['submission'] * 100:.0f}% of GPU time "
            "in the submission's Triton kernels "
            f"({', '.join(own) or 'none defined'}; at least {check.min_share:.0%} needed), "
            f"{shares['library GEMM'] * 100:.0f}% in library GEMMs"
        )
        library = [r["name"] for r in rows if _category(r["name"], own) == "library GEMM"]
        if library and shares["library GEMM"] > check.max_library_gemm_share:
            summary += f": library GEMM kernels ran ({', '.join(n[:60] for n in library[:3])})"
        ok = shares["submission"] >= check.min_share and shares["library GEMM"] <= check.max_library_gemm_share
        return (Verdict.passed if ok else Verdict.failed)(summary, table=table, details={k: round(v, 3) for k, v in shares.items()})
