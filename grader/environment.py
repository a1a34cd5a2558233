"""The versions recorded with every result."""

from __future__ import annotations

import functools
import platform
import sys
from importlib import metadata

from grader import __version__
from grader.results import Environment


@functools.lru_cache(maxsize=8)
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(gpu: str | None = None, plugins: dict[str, str] | None = None) -> Environment:
    """Versions of the grader, Python and the numeric stack, read without importing torch."""
    return Environment(
        grader=__version__,
        python=platform.python_version(),
        numpy=_version("numpy"),
        torch=_version("torch"),
        triton=_version("triton"),
        gpu=gpu,
        platform=f"{sys.platform}-{platform.machine()}",
        plugins=plugins or {},
    )
