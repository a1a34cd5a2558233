"""The versions recorded with every result, and whether this environment has what a lab needs."""

from __future__ import annotations

import functools
import os
import platform
import shlex
import socket
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

from grader import hardware
from grader.results import Environment
from grader.version import __version__

CHECKOUT = Path(__file__).resolve().parent.parent
"""The folder above the package: a source checkout when it holds pyproject.toml."""


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


def unmet(requires: Sequence[str]) -> list[tuple[Requirement, str | None]]:
    """The requirements among ``requires`` (pip requirement strings) that this environment does not
    satisfy, each with the version it has (None: not installed). Read from the installed
    distributions' metadata, never by importing them."""
    out = []
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = _version(req.name)
        try:
            ok = have is not None and req.specifier.contains(have, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            out.append((req, have))
    return out


def extra_for(name: str) -> str | None:
    """The grader's extra that installs distribution ``name``: the one named after it, else the smallest."""
    try:
        meta = metadata.metadata("grader")
        declared = [Requirement(text) for text in metadata.requires("grader") or []]
    except metadata.PackageNotFoundError:
        return None
    wanted = canonicalize_name(name)
    extras = {
        extra: {canonicalize_name(r.name) for r in declared if r.marker is not None and r.marker.evaluate({"extra": extra})}
        for extra in meta.get_all("Provides-Extra") or []
    }
    holding = [extra for extra, names in extras.items() if wanted in names]
    return min(holding, key=lambda e: (canonicalize_name(e) != wanted, len(extras[e]), e)) if holding else None


def requirements_problem(lab_id: str, requires: Sequence[str]) -> str | None:
    """One line saying what lab ``lab_id`` needs that this environment lacks, and the command that
    installs it; None when nothing is missing."""
    missing = unmet(requires)
    if not missing:
        return None
    state = "; ".join(f"{req} is not installed" if have is None else f"{req} is wanted, {have} is installed" for req, have in missing)
    extras = [extra_for(req.name) if have is None else None for req, have in missing]
    if all(extras) and (CHECKOUT / "pyproject.toml").is_file():
        names = list(dict.fromkeys(e for e in extras if e))
        where = "." if Path.cwd().resolve() == CHECKOUT else str(CHECKOUT)
        what = f"the {' and '.join(names)} extra{'s' if len(names) > 1 else ''}"
        command = "pip install -e " + shlex.quote(f"{where}[{','.join(names)}]")
    else:
        what = " and ".join(req.name for req, _ in missing)
        command = "pip install " + " ".join(shlex.quote(str(req)) for req, _ in missing)
    return f"{lab_id} needs {what} ({state}): {command}"
