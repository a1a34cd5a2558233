"""GPU checks: speed relative to the reference, and a profile of whose kernels do the work.

Timing follows gpu-eval.md section 7. The submission is timed by the harness in its worker
(warm-up, an L2 flush before every call, fresh inputs for every timed call, a device-wide
synchronise before each end event, the median and its spread); the reference solution is timed
by the same harness in the grader's own process, on the same inputs, in the same run. Every
timed output is re-checked by fingerprint against the reference's, times under the roofline
floor are rejected as impossible, and the score is the speed relative to the reference.

What this cannot prove: the harness shares its process with the submission, so a submission
that patches torch's timers or profiler inside its own process could lie to them. The
fingerprints, the roofline floor, the static rule check and the ghost replay are the layers
that make such a lie hard to profit from; docs/lab-05-gpu.md says more.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Literal

from pydantic import Field

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
from grader.sandbox.boot import gpu as harness

LIBRARY_GEMM = ("nvjet", "gemm", "cutlass", "cublas", "xmma", "Kernel2", "splitKreduce")


class GpuSpeedOptions(TimedCheckSpec):
    """Speed on the GPU relative to the reference solution, per graded shape."""

    kind: Literal["gpu-speed"] = "gpu-speed"
    requires: Hardware = Field(default=Hardware.gpu, description="GPU checks are skipped without CUDA.")
    cases: str = Field(description="The graded shapes (a key of [cases]).")
    reference: str | None = Field(default=None, description="The solution function timed as the yardstick.")
    fresh: str = Field(description="lab.py function(rng, inputs) -> inputs with fresh activations, for each timed call.")
    floor: str = Field(description="lab.py function(inputs) -> (floor in us, FLOPs, bytes) from the roofline.")
    repeats: int = Field(default=10, ge=5, description="Timed calls per shape, each on fresh inputs.")
    target: float = Field(
        default=0.9, gt=0, le=1, description="Geometric-mean speed ratio (reference time / submission time) for full marks."
    )
    fingerprint_rtol: float = Field(default=2e-2, gt=0, description="How far a timed output's fingerprint may drift.")

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        out = support_function_problems(manifest, self.fresh, "fresh") + support_function_problems(manifest, self.floor, "floor")
        return out + case_set_problems(manifest, self.cases)


def _fingerprints_agree(a: list[float], b: list[float], rtol: float) -> bool:
    """sum(|x|) and sum(x^2) within rtol (the plain sum can be near zero, so it is not compared)."""
    return all(abs(x - y) <= rtol * max(abs(y), 1e-12) for x, y in zip(a[1:], b[1:]))


class GpuSpeedChecker(Checker):
    name = "gpu-speed"
    Options = GpuSpeedOptions

    def run(self, check_id: str, check: GpuSpeedOptions, ctx: CheckContext) -> Verdict:
        fresh = ctx.lab.support_function(check.fresh)
        floor_fn = ctx.lab.support_function(check.floor)
        reference = ctx.lab.implementation(check.function, check.reference)
        limit = check.time_limit_s or 600.0
        rows: list[dict[str, Any]] = []
        ratios: list[float] = []
        for case in ctx.cases(check.cases, check_id):
            sets = [fresh(ctx.rng(check_id, case.index, "timed", i), case.inputs) for i in range(check.repeats)]
            ref_args = [ctx.lab.arguments(check.function, s, ctx.device) for s in sets]
            ref_times, ref_prints = harness.time_calls(reference, ref_args, warmup=3, budget_s=60.0)
            del ref_args
            times, prints, wall = ctx.submission.time(check.function, sets, limit, warmup=3, budget_s=60.0)
            for i, (got, want) in enumerate(zip(prints, ref_prints)):
                if not _fingerprints_agree(got, want, check.fingerprint_rtol):
                    return Verdict.failed(f"{case.label}: timed call {i + 1} returned a different answer from the reference's")
            floor_us, flops, nbytes = floor_fn(case.inputs)
            t_sub, t_ref = statistics.median(times), statistics.median(ref_times)
            if t_sub < 0.95 * floor_us:
                return Verdict.error(
                    f"{case.label}: {t_sub:.1f} us is under the roofline floor of {floor_us:.1f} us, which no correct "
                    "kernel can beat; the timing cannot be trusted"
                )
            if sum(times) > wall * 1e6:
                return Verdict.error(f"{case.label}: the worker reported more time than passed on the grader's clock")
            q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), t_sub, max(times)]
            ratios.append(t_ref / t_sub)
            rows.append(
                {
                    "shape": ", ".join(f"{k}={v}" for k, v in case.dims.items()),
                    "reference_us": round(t_ref, 1),
                    "submission_us": round(t_sub, 1),
                    "iqr_us": round(q[2] - q[0], 1),
                    "speed_vs_reference": round(t_ref / t_sub, 3),
                    "floor_us": round(floor_us, 1),
                    "pct_of_floor": round(100 * floor_us / t_sub, 1),
                    "tflops": round(flops / t_sub / 1e6, 1),
                    "gbps": round(nbytes / t_sub / 1e3, 1),
                }
            )
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        fraction = min(1.0, geomean / check.target)
        message = (
            f"speed {geomean:.2f}x the reference's (geometric mean over {len(rows)} shapes, "
            f"{check.target:g}x or better earns full marks): {fraction * 100:.0f}% of the points"
        )
        details = {"geomean_speed_vs_reference": round(geomean, 3), "fraction": round(fraction, 3)}
        status = Verdict.passed if fraction >= 1.0 else Verdict.failed
        return status(message, table=rows, details=details, fraction=fraction, margin=geomean / check.target - 1)


class GpuProfileOptions(CheckSpec):
    """The profiler shows the submission's own Triton kernels carrying the work."""

    kind: Literal["gpu-profile"] = "gpu-profile"
    requires: Hardware = Field(default=Hardware.gpu, description="GPU checks are skipped without CUDA.")
    cases: str = Field(description="Case set; its first case is profiled.")
    min_share: float = Field(default=0.8, gt=0, le=1, description="Least share of GPU time in the submission's own kernels.")
    max_library_gemm_share: float = Field(
        default=0.05, ge=0, le=1, description="Most share of GPU time in library GEMM kernels (cuBLAS, CUTLASS)."
    )

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        return case_set_problems(manifest, self.cases)


def _category(name: str, own: list[str]) -> str:
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
            return Verdict.error("the profiler recorded no GPU kernels (CUPTI unavailable?); nothing can be proven")
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
            f"{case.label}: {shares['submission'] * 100:.0f}% of GPU time in the submission's Triton kernels "
            f"({', '.join(own) or 'none defined'}), {shares['library GEMM'] * 100:.0f}% in library GEMMs"
        )
        ok = shares["submission"] >= check.min_share and shares["library GEMM"] <= check.max_library_gemm_share
        return (Verdict.passed if ok else Verdict.failed)(summary, table=table, details={k: round(v, 3) for k, v in shares.items()})
