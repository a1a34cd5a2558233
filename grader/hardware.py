"""What hardware the grader can use; torch is imported only when a lab needs a GPU."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Any

NO_GPU_ENV = "GRADER_NO_GPU"


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
