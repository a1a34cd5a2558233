"""What hardware the grader can use, and the limits of the GPU in use.

torch is imported only when a lab needs a GPU. A GPU check uses two kinds of ceiling:

* **datasheet ceilings** (the vendor's peak memory bandwidth and dense matrix rates, by device
  name): the floor under which a time is physically impossible. A time under that floor, less
  a margin, is rejected. An unknown device is refused unless ``GRADER_GPU_CEILINGS`` says what
  to use, so no check ever compares against another card's limits.
* **measured ceilings** (the fastest of several kernels that read a large buffer once, and a
  large matrix product; timed once per device and reused across processes for an hour,
  :mod:`grader.gpu_cache`): what "% of roofline" on a student's scorecard is relative to. Bytes
  are counted as a lab's ``work()`` counts them (read once plus written), so a kernel that
  mostly reads, as an MoE layer does, stays under 100%; a device copy (half writes) would not.

Both are recorded in the result with the device's name, driver and clocks.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from grader import gpu_cache
from grader.errors import InfrastructureError

NO_GPU_ENV = "GRADER_NO_GPU"
CEILINGS_ENV = "GRADER_GPU_CEILINGS"

SAFETY = 0.9
"""A timed call faster than this fraction of the datasheet floor is rejected: the margin covers
event-timer jitter and the floor's own byte count, never a kernel beating the hardware."""

MEASURED_WIDENING = 1.5
"""With GRADER_GPU_CEILINGS=measured the floor uses rates measured here, times this: kernels
were seen reading weights 5% faster than a device copy moves data (an H200, 2026-12-01), and a
library matrix product reaches 70-80% of the datasheet rate."""


@dataclass(frozen=True)
class Ceilings:
    """Memory bandwidth (bytes read plus written per second) and dense matrix rates (FLOP/s) by dtype."""

    bandwidth: float
    rates: Mapping[str, float] = field(hash=False)
    source: str = ""

    def roofline_us(self, flops: float, nbytes: float, dtype: str) -> float:
        """max(FLOPs / rate, bytes / bandwidth), in microseconds."""
        rate = self.rates.get(dtype)
        if rate is None:
            raise InfrastructureError(f"no {dtype} matrix rate for this GPU ({self.source}); known: {', '.join(self.rates)}")
        return max(flops / rate, nbytes / self.bandwidth) * 1e6

    def floor_us(self, flops: float, nbytes: float, dtype: str) -> float:
        """The time under which no correct call can finish: the roofline less the safety margin."""
        return SAFETY * self.roofline_us(flops, nbytes, dtype)

    def describe(self, prefix: str) -> dict[str, float | str]:
        """Flat numbers for a result's details: bandwidth in GB/s, rates in TFLOP/s."""
        out: dict[str, float | str] = {f"{prefix}_source": self.source, f"{prefix}_bandwidth_gbps": round(self.bandwidth / 1e9, 1)}
        out.update({f"{prefix}_{dtype}_tflops": round(rate / 1e12, 1) for dtype, rate in self.rates.items()})
        return out


def _sheet(
    bandwidth_tbps: float, bf16_tflops: float, tf32_tflops: float, fp32_tflops: float, source: str, fp8_tflops: float | None = None
) -> Ceilings:
    rates = {"bfloat16": bf16_tflops, "float16": bf16_tflops, "tfloat32": tf32_tflops, "float32": fp32_tflops}
    if fp8_tflops is not None:  # GPUs with FP8 tensor cores (Ada, Hopper, Blackwell)
        rates["float8_e4m3fn"] = fp8_tflops
    return Ceilings(bandwidth_tbps * 1e12, {k: v * 1e12 for k, v in rates.items()}, source)


# Vendor datasheet peaks, dense (no 2:4 sparsity; FP8 is half the datasheet's sparse figure), by the
# name torch.cuda.get_device_name gives.
# Leads, not measurements: they bound what any kernel can reach, which is all the floor needs.
_A100_40 = _sheet(1.555, 312, 156, 19.5, "NVIDIA A100 datasheet (40GB: 1555 GB/s)")
_H100_SXM = _sheet(3.35, 989.4, 494.7, 66.9, "NVIDIA H100 datasheet (SXM5)", fp8_tflops=1978.9)
_H200_SXM = _sheet(4.8, 989.4, 494.7, 66.9, "NVIDIA H200 datasheet (SXM)", fp8_tflops=1978.9)
DATASHEET: dict[str, Ceilings] = {
    "NVIDIA A100-SXM4-40GB": _A100_40,
    "NVIDIA A100-PCIE-40GB": _A100_40,
    "NVIDIA A100-SXM4-80GB": _sheet(2.039, 312, 156, 19.5, "NVIDIA A100 datasheet (80GB SXM: 2039 GB/s)"),
    "NVIDIA A100 80GB PCIe": _sheet(1.935, 312, 156, 19.5, "NVIDIA A100 datasheet (80GB PCIe: 1935 GB/s)"),
    "NVIDIA L40S": _sheet(0.864, 362.05, 183, 91.6, "NVIDIA L40S datasheet", fp8_tflops=733),
    "NVIDIA H100 80GB HBM3": _H100_SXM,
    "NVIDIA H100 PCIe": _sheet(2.0, 756.5, 378, 51.2, "NVIDIA H100 datasheet (PCIe)", fp8_tflops=1513),
    "NVIDIA H100 NVL": _sheet(3.9, 835.5, 417.5, 60, "NVIDIA H100 datasheet (NVL)", fp8_tflops=1670.5),
    "NVIDIA H200": _H200_SXM,
    "NVIDIA H200 NVL": _sheet(4.8, 835.5, 417.5, 60, "NVIDIA H200 datasheet (NVL)", fp8_tflops=1670.5),
    "NVIDIA B200": _sheet(8.0, 2250, 1100, 80, "NVIDIA HGX B200 datasheet (1000 W)", fp8_tflops=4500),
}


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def parse_ceilings(text: str, measured: Callable[[], Ceilings]) -> Ceilings:
    """The ceilings ``GRADER_GPU_CEILINGS`` names: ``measured`` (rates measured here, widened by
    MEASURED_WIDENING), or ``bandwidth=<bytes/s>,<dtype>=<FLOP/s>,...``."""
    text = text.strip()
    if text.lower() == "measured":
        m = measured()
        return Ceilings(
            m.bandwidth * MEASURED_WIDENING,
            {k: v * MEASURED_WIDENING for k, v in m.rates.items()},
            f"measured on this GPU, widened {MEASURED_WIDENING:g}x ({CEILINGS_ENV}=measured)",
        )
    values: dict[str, float] = {}
    for part in text.split(","):
        name, _, number = part.partition("=")
        try:
            values[name.strip()] = float(number)
        except ValueError:
            raise InfrastructureError(
                f"{CEILINGS_ENV}={text!r}: expected 'measured' or 'bandwidth=<bytes/s>,bfloat16=<FLOP/s>', "
                f"got {part.strip()!r}"
            ) from None
    bandwidth = values.pop("bandwidth", None)
    if bandwidth is None or bandwidth <= 0 or not values or min(values.values()) <= 0:
        raise InfrastructureError(f"{CEILINGS_ENV}={text!r}: needs a positive bandwidth and at least one positive <dtype>=<FLOP/s>")
    return Ceilings(bandwidth, values, f"given by {CEILINGS_ENV}")


def datasheet_ceilings(
    name: str, measured: Callable[[], Ceilings], override: str | None = None, table: Mapping[str, Ceilings] | None = None
) -> Ceilings:
    """The ceilings the floor uses on the GPU ``name``: ``override`` (GRADER_GPU_CEILINGS) when
    set, else the entry of ``table`` (DATASHEET); an unknown device is refused with what to do."""
    if override is None:
        override = os.environ.get(CEILINGS_ENV)
    if table is None:
        table = DATASHEET
    if override:
        return parse_ceilings(override, measured)
    by_key = {_key(k): v for k, v in table.items()}
    found = by_key.get(_key(name))
    if found is None:
        raise InfrastructureError(
            f"the grader has no datasheet ceilings for the GPU {name!r}, so it cannot tell an impossible time from a "
            f"fast one; set {CEILINGS_ENV}='bandwidth=<bytes/s>,bfloat16=<FLOP/s>' from its datasheet, or "
            f"{CEILINGS_ENV}=measured to trust rates measured on it (known: {', '.join(sorted(table))})"
        )
    return found


@functools.lru_cache(maxsize=1)
def cuda_device() -> str | None:
    """The name of the first CUDA device, or None (no torch, no CUDA, or GRADER_NO_GPU set)."""
    if os.environ.get(NO_GPU_ENV):
        return None
    try:
        import torch
    except ImportError:
        return None
    try:
        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # a broken driver is the same as no GPU for grading purposes
        return None
    return None


# --- where a result was graded (its environment) ----------------------------------------------

SMI_FIELDS = ("uuid", "name", "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem")
CLOCKS = {"clocks.sm": "sm", "clocks.mem": "memory", "clocks.max.sm": "sm_max", "clocks.max.mem": "memory_max"}


@functools.lru_cache(maxsize=1)
def _torch_uuid() -> str | None:
    """The UUID of CUDA device 0 as nvidia-smi writes it (``GPU-...``), or None."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(0).uuid)
    except Exception:  # an older torch without .uuid, or no device
        return None
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"


def _driver_from_proc() -> str | None:
    try:
        text = open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    words = text.split("Kernel Module", 1)[-1].split()
    return words[0] if words and words[0][:1].isdigit() else None


def gpu_details(uuid: str | None = None) -> dict[str, Any]:
    """Driver, UUID and clocks of the GPU that grades (CUDA device 0), for the result's environment.

    From ``nvidia-smi`` (the row of ``uuid``, by default device 0's; the only row when there is
    one); the driver from ``/proc/driver/nvidia/version`` when nvidia-smi is missing. Values
    that cannot be read are None."""
    details: dict[str, Any] = {"gpu_driver": None, "gpu_uuid": uuid or _torch_uuid(), "gpu_clocks_mhz": None}
    smi = shutil.which("nvidia-smi")
    rows: list[dict[str, str]] = []
    if smi:
        try:
            proc = subprocess.run(
                [smi, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            if proc.returncode == 0:
                rows = [dict(zip(SMI_FIELDS, (v.strip() for v in line.split(",")))) for line in proc.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            rows = []
    row = next((r for r in rows if details["gpu_uuid"] and r.get("uuid") == details["gpu_uuid"]), None)
    if row is None and len(rows) == 1:
        row = rows[0]
    if row is not None:
        details["gpu_uuid"] = row.get("uuid") or details["gpu_uuid"]
        details["gpu_driver"] = row.get("driver_version") or None
        clocks = {name: int(row[key]) for key, name in CLOCKS.items() if row.get(key, "").isdigit()}
        details["gpu_clocks_mhz"] = clocks or None
    if details["gpu_driver"] is None:
        details["gpu_driver"] = _driver_from_proc()
    return details


# --- what the device is, and how it is clocked ------------------------------------------------


def gpu_facts(device: int = 0) -> dict[str, Any]:
    """Name, multiprocessors, L2, driver and current clocks of a CUDA device (flat, for a check's
    details). Clocks are read now: call it right after the work they should describe."""
    import torch

    props = torch.cuda.get_device_properties(device)
    uuid = str(getattr(props, "uuid", "") or "")
    details = gpu_details((uuid if uuid.startswith("GPU-") else f"GPU-{uuid}") if uuid else None)
    clocks = details["gpu_clocks_mhz"] or {}
    return {
        "gpu": props.name,
        "gpu_sms": props.multi_processor_count,
        "gpu_l2_mb": round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
        "gpu_memory_gb": round(props.total_memory / 1e9, 1),
        "gpu_driver": details["gpu_driver"],
        "gpu_sm_clock_mhz": clocks.get("sm"),
        "gpu_max_sm_clock_mhz": clocks.get("sm_max"),
        "gpu_mem_clock_mhz": clocks.get("memory"),
    }


@functools.lru_cache(maxsize=1)
def device_identity() -> dict[str, Any]:
    """What compiled kernels and a calibration depend on: the device, its driver, torch and Triton
    (empty without CUDA; read once per process)."""
    try:
        import torch
        import triton
    except ImportError:
        return {}
    if cuda_device() is None:
        return {}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "capability": f"{props.major}.{props.minor}",
        "driver": gpu_details().get("gpu_driver"),
        "torch": torch.__version__,
        "triton": triton.__version__,
    }


# --- ceilings measured on the device at hand ---------------------------------------------------

CALIBRATION_VERSION = 3
"""Bumped whenever what the calibration measures changes, so a stored one is not reused."""
READ_BYTES = 2 << 30
COPY_BYTES = 1 << 30
MATMUL_N = 8192


def _median_ms(torch: Any, fn: Callable[[], Any], reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _copy_bandwidth(torch: Any, dev: Any) -> float:
    src = torch.empty(COPY_BYTES // 4, dtype=torch.float32, device=dev).normal_()
    dst = torch.empty_like(src)
    return 2.0 * COPY_BYTES / (_median_ms(torch, lambda: dst.copy_(src), 20) * 1e-3)


def _read_bandwidths(torch: Any, dev: Any) -> dict[str, float]:
    """Bytes read plus bytes written per second by kernels that stream a 2 GiB bf16 buffer and
    write almost nothing (counted as lab.py's ``work()`` counts a call: everything read once,
    the small output written): a row sum, a matrix-vector product, Triton's streaming read and
    Triton's weight-streaming read in the tiles of the lab's decode GEMMs (grader/gpu_read.py), at
    a few shapes; the fastest is the ceiling. The lab's kernels mostly read weights; a copy (half
    writes) runs slower than they do, so it cannot be their ceiling."""
    buf = torch.empty(READ_BYTES // 2, dtype=torch.bfloat16, device=dev).normal_()
    rows = buf.view(-1, 8192)
    sums = torch.empty(rows.shape[0], dtype=torch.float32, device=dev)
    vec = torch.randn(8192, dtype=torch.bfloat16, device=dev)
    out: dict[str, float] = {}
    nbytes = READ_BYTES + rows.shape[0] * 4
    out["torch.sum"] = nbytes / (_median_ms(torch, lambda: torch.sum(rows, dim=1, dtype=torch.float32, out=sums), 20) * 1e-3)
    out["torch.mv"] = (READ_BYTES + rows.shape[0] * 2) / (_median_ms(torch, lambda: torch.mv(rows, vec), 20) * 1e-3)
    try:
        from grader import gpu_read
    except ImportError:  # no Triton: the torch kernels alone
        return out
    for name, fn, written in gpu_read.variants(buf, torch.cuda.get_device_properties(dev).multi_processor_count):
        out[name] = (READ_BYTES + written) / (_median_ms(torch, fn, 20) * 1e-3)
    return out


def _fp8_matmul_rate(torch: Any, dev: Any) -> float:
    """e4m3 x e4m3 -> bf16 through torch._scaled_mm (cuBLASLt), per-tensor scales of 1."""
    a = torch.randn(MATMUL_N, MATMUL_N, device=dev).to(torch.float8_e4m3fn)
    b = torch.randn(MATMUL_N, MATMUL_N, device=dev).to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
    one = torch.ones((), device=dev)
    run = lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)  # noqa: E731
    return 2.0 * MATMUL_N**3 / (_median_ms(torch, run, 10) * 1e-3)


def _matmul_rate(torch: Any, dev: Any, name: str) -> float:
    if name == "float8_e4m3fn":
        return _fp8_matmul_rate(torch, dev)
    dtype = torch.float32 if name in ("tfloat32", "float32") else getattr(torch, name)
    a = torch.randn(MATMUL_N, MATMUL_N, device=dev, dtype=dtype)  # random data: zeros run faster
    b = torch.randn(MATMUL_N, MATMUL_N, device=dev, dtype=dtype)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = name == "tfloat32"
    try:
        return 2.0 * MATMUL_N**3 / (_median_ms(torch, lambda: torch.mm(a, b), 10) * 1e-3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _calibrate(device: int, dtypes: tuple[str, ...]) -> dict[str, Any]:
    """One calibration of ``device``, as plain numbers (what is stored between processes)."""
    import torch

    dev = torch.device("cuda", device)
    reads = _read_bandwidths(torch, dev)
    copy = _copy_bandwidth(torch, dev)
    rates = {name: _matmul_rate(torch, dev, name) for name in dtypes}
    torch.cuda.empty_cache()
    return {"reads": reads, "copy": copy, "rates": rates}


def ceilings_from(values: dict[str, Any], fresh: bool) -> Ceilings:
    """The measured Ceilings of a calibration: the fastest read kernel's bandwidth, the matrix rates."""
    reads: dict[str, float] = values["reads"]
    best = max(reads, key=lambda k: reads[k])
    when = "measured here" if fresh else f"measured on this GPU within the last {gpu_cache.max_age_s():g} s"
    source = (
        f"{when}: the fastest of {len(reads)} kernels that read a {READ_BYTES >> 30} GiB buffer once ({best}, "
        f"{reads[best] / 1e9:.0f} GB/s; a device copy, half of it writes, moved {values['copy'] / 1e9:.0f} GB/s) "
        f"and {MATMUL_N}^3 torch.mm (torch._scaled_mm for float8_e4m3fn); medians of CUDA-event-timed calls"
    )
    return Ceilings(reads[best], dict(values["rates"]), source)


@functools.lru_cache(maxsize=8)
def _measure(device: int, dtypes: tuple[str, ...]) -> Ceilings:
    import torch

    identity = {**device_identity(), "uuid": str(getattr(torch.cuda.get_device_properties(device), "uuid", device)),
                "dtypes": list(dtypes), "calibration": CALIBRATION_VERSION}  # fmt: skip
    values, fresh = gpu_cache.calibration(identity, lambda: _calibrate(device, dtypes))
    return ceilings_from(values, fresh)


def measured_ceilings(dtypes: tuple[str, ...] = ("bfloat16",), device: int = 0, again: bool = False) -> Ceilings:
    """Read bandwidth and matrix rates measured on ``device`` (a few seconds, once per device and
    dtype set, reused across processes for GRADER_CALIBRATION_MAX_AGE_S; ``again`` measures anew
    here, e.g. at the end of a long run)."""
    key = tuple(sorted(dtypes))
    if again:
        return ceilings_from(_calibrate(device, key), True)
    return _measure(device, key)
