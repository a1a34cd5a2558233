"""What a GPU grading keeps between gradings: the reference's compiled kernels and the calibration.

Both live in a folder the grader owns (``GRADER_CACHE_DIR``, else ``$XDG_CACHE_HOME/grader``, else
``~/.cache/grader``), never in anything a submission can write:

* **The reference's Triton kernels.** The grader's own process compiles the lab's solution (the
  speed check's yardstick, and the calibration's read kernel) into ``triton/<key>``, one folder
  per device, driver, torch and Triton version, and solution source. A GPU worker gets that folder
  read-only (:mod:`grader.sandbox.boot.kernel_cache`): a submission whose kernel is the reference's
  to the byte finds it compiled; any other kernel compiles in the worker's private cache, which
  is discarded with its sandbox, so nothing one submission compiles reaches another's grading.
  The folder is searchable but not listable (mode 0311): a worker can open a kernel only by the
  name Triton derives from its source, so it learns nothing it did not already have.
* **The calibration** (:func:`grader.hardware.measured_ceilings`): the bandwidth and matrix rates
  measured on a device, reused by every grading on that device for ``GRADER_CALIBRATION_MAX_AGE_S``
  (default an hour), so a batch calibrates once per device instead of once per worker process.

``GRADER_GPU_CACHE=0`` turns both off (every process compiles and calibrates anew, as before);
``benchmarks/grading_speed.py`` times the two side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

CACHE_ENV = "GRADER_CACHE_DIR"
SWITCH_ENV = "GRADER_GPU_CACHE"
MAX_AGE_ENV = "GRADER_CALIBRATION_MAX_AGE_S"
DEFAULT_MAX_AGE_S = 3600.0


def enabled() -> bool:
    """Whether gradings share the reference's kernels and the calibration (GRADER_GPU_CACHE, default on)."""
    return os.environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def root() -> Path:
    """The grader's own cache folder."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "grader"


def _digest(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _private_dir(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


# --- the reference's kernels ---------------------------------------------------------------------


NOT_LISTABLE = 0o311


def reference_kernels(solution: Path, identity: Mapping[str, Any]) -> Path | None:
    """The folder of the compiled kernels of the solution at ``solution`` on the device ``identity``
    names (hardware.device_identity(); made, searchable, not listable), or None when the cache is
    off or there is no CUDA device."""
    if not enabled() or not identity:
        return None
    try:
        source = hashlib.sha256(Path(solution).read_bytes()).hexdigest()
    except OSError:
        return None
    key = _digest({**identity, "solution": source})
    try:
        base = _private_dir(root(), 0o755)
        # 0311: nobody lists it, not even its owner (a worker may run as the grader's uid), while
        # Triton, which never lists, creates and finds kernels in it by name.
        return _private_dir(_private_dir(base / "triton", 0o711) / key, NOT_LISTABLE)
    except OSError:  # no writable cache folder here: every grading compiles, as without the cache
        return None


def use_for_this_process(folder: Path | None) -> None:
    """Compile this process's Triton kernels (trusted code only: the reference, the calibration) into ``folder``."""
    if folder is not None:
        os.environ["TRITON_CACHE_DIR"] = str(folder)


# --- the calibration ----------------------------------------------------------------------------


def max_age_s() -> float:
    try:
        return float(os.environ.get(MAX_AGE_ENV, DEFAULT_MAX_AGE_S))
    except ValueError:
        return DEFAULT_MAX_AGE_S


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def calibration(
    identity: Mapping[str, Any], measure: Callable[[], dict[str, Any]], now: Callable[[], float] = time.time
) -> tuple[dict[str, Any], bool]:
    """The calibration of the device ``identity`` names: a stored one younger than
    GRADER_CALIBRATION_MAX_AGE_S, else ``measure()``'s (stored for the next process). Processes
    that ask at once wait for one measurement (a file lock), so two never time the same GPU
    together. Returns the values and whether they were measured now."""
    age = max_age_s()
    if not enabled() or age <= 0 or not identity:
        return measure(), True
    with contextlib.ExitStack() as held:
        try:
            folder = _private_dir(_private_dir(root(), 0o755) / "calibration", 0o700)
            held.enter_context(_locked(folder / ".lock"))
        except OSError:  # no writable cache folder here: measure, as without the cache
            return measure(), True
        path = folder / f"{_digest(identity)}.json"
        try:
            stored = json.loads(path.read_text())
            if stored.get("identity") == json.loads(json.dumps(dict(identity), default=str)) and 0 <= now() - stored["measured_at"] < age:
                return stored["values"], False
        except (OSError, ValueError, KeyError, TypeError):
            pass
        values = measure()
        try:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"identity": dict(identity), "measured_at": now(), "values": values}, default=str))
            os.replace(tmp, path)
        except OSError:
            pass  # measured, just not kept for the next process
        return values, True


# --- before the GPU checks' turn ------------------------------------------------------------------


def warm_reference(lab: Any, seeds: Any, checks: Mapping[str, Any], plugins: Any) -> list[str]:
    """In the grader's process: run the solution once on every shape the GPU checks use (compiling
    its kernels into the reference folder, where the workers find them) and let each GPU checker
    prepare (calibrate). Returns what went wrong, one line each: the checks meet the same problem
    in their own turn and report it there, so nothing here is fatal."""
    problems: list[str] = []
    seen: set[tuple[Any, ...]] = set()
    for check_id, check in checks.items():
        try:
            plugins.checker(check.kind).prepare(check_id, check, lab, seeds)
        except Exception as exc:  # noqa: BLE001 - reported by the check itself
            problems.append(f"{check_id}: prepare: {type(exc).__name__}: {exc}")
        case_set = getattr(check, "cases", None)
        if not case_set or not callable(getattr(lab.solution, check.function, None)):
            continue
        for case in lab.cases(case_set, seeds, check_id):
            shape = (check.function, tuple(sorted(case.dims.items())))
            if shape in seen:
                continue
            seen.add(shape)
            try:
                lab.call_solution(check.function, case.inputs, "cuda")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{check_id}: {case.label}: {type(exc).__name__}: {exc}")
    return problems
