"""The versions recorded with every result."""

from __future__ import annotations

import functools
import os
import platform
import socket
import sys
from importlib import metadata

from grader import hardware
from grader.results import Environment
from grader.version import __version__


@functools.lru_cache(maxsize=8)
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _job() -> str | None:
    """The Slurm job this runs in, if any: ``slurm 1234_5`` for an array task."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm {os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return f"slurm {os.environ['SLURM_JOB_ID']}" if os.environ.get("SLURM_JOB_ID") else None


def environment(gpu: str | None = None, plugins: dict[str, str] | None = None) -> Environment:
    """Versions of the grader, Python and the numeric stack (read without importing torch), the
    node and job that graded, and the GPU's driver, UUID and clocks when ``gpu`` (a model) is set."""
    return Environment(
        grader=__version__,
        python=platform.python_version(),
        numpy=_version("numpy"),
        torch=_version("torch"),
        triton=_version("triton"),
        gpu=gpu,
        platform=f"{sys.platform}-{platform.machine()}",
        plugins=plugins or {},
        node=socket.gethostname() or None,
        job=_job(),
        **(hardware.gpu_details() if gpu else {}),
    )
