"""Gradescope: the autograder zip, and ``results.json`` in Gradescope's format.

The zip (``grader lms gradescope build``) holds ``setup.sh`` (run once when Gradescope builds
its image: bubblewrap, a venv, CPU torch, this package from the copy in the zip),
``run_autograder`` (run per submission), ``grader.env`` (the lab and the secret seed), the
package source and the one lab folder, without its ``wrong/`` and ``accepted/`` files (known
answers) or test folders.

``run_autograder`` first writes a valid fallback ``results.json`` (score 0, explanation), then
runs ``grader lms gradescope run`` under a timeout; the grader replaces the file atomically
when it finishes. If the grader crashes, is killed, or cannot even start, the fallback stays,
amended with what happened. The grader's own output goes to run_autograder's stdout, which
Gradescope keeps in ``/autograder/results/stdout``; nothing is ever parsed out of it.
"""

from __future__ import annotations

import io
import os
import secrets
import shlex
import stat
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from grader import __version__
from grader.lms.base import LmsFormat
from grader.manifest import LabManifest
from grader.results import CheckResult, GradeResult, Status
from grader.text import printable

ROOT_ENV = "AUTOGRADER_ROOT"
DEFAULT_ROOT = Path("/autograder")
TEMPLATES = Path(__file__).parent / "templates"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
TEST_OUTPUT_LIMIT = 8000
OUTPUT_LIMIT = 16000
LAB_EXCLUDE = {"wrong", "accepted", "tests", "__pycache__", ".pytest_cache"}


def _clip(text: str, limit: int) -> str:
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 40] + f"\n... ({len(text) - limit + 40} more characters cut)"


def check_output(check: CheckResult) -> str:
    """A check's explanation as plain text: message, first mismatches, measured numbers, hint."""
    lines = [f"{check.status.value.upper()}: {check.message}"]
    if check.mismatches:
        lines.append("First mismatches:")
        lines += [f"  {m.where}: expected {m.expected}, got {m.got}" for m in check.mismatches]
    lines += [f"{k}: {v}" for k, v in check.details.items()]
    if check.hint and check.status is not Status.passed:
        lines.append(f"What to look at: {check.hint}")
    return _clip("\n".join(lines), TEST_OUTPUT_LIMIT)


class GradescopeFormat(LmsFormat):
    """Gradescope's ``results.json`` (specs: gradescope-autograders.readthedocs.io, "specs")."""

    name = "gradescope"
    filename = "results.json"

    def payload(self, result: GradeResult) -> dict[str, Any]:
        tests = []
        for number, check in enumerate(result.checks, start=1):
            tests.append(
                {
                    "name": f"{check.id}: {check.title}",
                    "number": str(number),
                    "score": float(check.score),
                    "max_score": float(check.max_score),
                    "status": "passed" if check.status is Status.passed else "failed",
                    "output": check_output(check),
                    "visibility": check.visibility.value,
                    "tags": [check.function, check.kind],
                    "extra_data": {"check": check.id, "status": check.status.value, "duration_s": check.duration_s},
                }
            )
        lines = [f"{result.exercise}: {result.score:g} / {result.max_score:g} ({result.percent:.0f}%)"]
        if not result.gradable:
            lines += [
                "",
                f"NOT GRADED: {result.error}",
                "Your score is 0 for now because the autograder could not grade this upload. If the reason "
                "above is about your files, fix them and upload again; otherwise tell the course staff.",
            ]
        if result.sandbox.degraded:
            lines += ["", "Note: graded without full isolation (" + "; ".join(result.sandbox.warnings) + ")."]
        every_check_visible = all(c.visibility.value == "visible" for c in result.checks)
        if result.submission_output.strip() and every_check_visible:
            lines += ["", "What your code printed (last lines):", result.submission_output.strip()]
        return {
            "score": float(result.score) if result.gradable else 0.0,
            "execution_time": round(result.duration_s, 3),
            "output": _clip("\n".join(lines), OUTPUT_LIMIT),
            "output_format": "text",
            "test_output_format": "text",
            "test_name_format": "text",
            "stdout_visibility": "hidden",
            "tests": tests,
            "extra_data": {
                "grader": result.environment.grader,
                "exercise": result.exercise,
                "max_score": result.max_score,
                "gradable": result.gradable,
                "submission": printable(result.submission, 200, False),
                "submission_sha256": result.submission_sha256,
                "sandbox": result.sandbox.mode,
                "official": result.official,
            },
        }

    def error_payload(self, reason: str) -> dict[str, Any]:
        return {
            "score": 0.0,
            "output": _clip(f"NOT GRADED: {reason}\nPlease tell the course staff: the autograder could not run.", OUTPUT_LIMIT),
            "output_format": "text",
            "stdout_visibility": "hidden",
            "tests": [],
            "extra_data": {"grader": __version__, "gradable": False},
        }


# --- the autograder zip ------------------------------------------------------------------------


def default_torch() -> str:
    """The torch this grader runs with, as a pip requirement for the CPU build (local tag dropped)."""
    try:
        return "torch==" + metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return "torch"


def _add_tree(zf: zipfile.ZipFile, source: Path, prefix: str, exclude: set[str], mode: int = 0o644) -> None:
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part in exclude or part.startswith(".") for part in rel.parts) or path.suffix == ".pyc":
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            continue
        if path.is_file():
            # test_lab.py stays: the manifest loader requires it, and it only calls grader.testing.
            if path.name.startswith("test_") and path.suffix == ".py" and path.name != "test_lab.py":
                continue
            _write(zf, f"{prefix}/{rel.as_posix()}", path.read_bytes(), mode)


def _write(zf: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def _write_dir(zf: zipfile.ZipFile, name: str, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = ((stat.S_IFDIR | mode) << 16) | 0x10  # 0x10: the MS-DOS directory flag
    zf.writestr(info, b"")


def _project_root() -> Path:
    root = PACKAGE_DIR.parent
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"no pyproject.toml beside {PACKAGE_DIR}: build the zip from a source checkout")
    return root


def build_autograder(
    manifest: LabManifest,
    out: Path,
    torch: str | None = None,
    secret_seed: str | None = None,
    timeout_s: int = 540,
    allow_unsandboxed: bool = False,
) -> Path:
    """Write the Gradescope autograder zip for ``manifest``'s lab to ``out``."""
    root = _project_root()
    lab_dir = manifest.directory
    lab_rel = f"exercises/{lab_dir.parent.name}/{lab_dir.name}"
    settings = {
        "EXERCISE": manifest.id,
        "GRADER_SECRET_SEED": secret_seed or secrets.token_hex(16),
        "GRADER_TIMEOUT_S": str(timeout_s),
        "GRADER_ALLOW_UNSANDBOXED": "1" if allow_unsandboxed else "0",
        "GRADER_TORCH": torch or default_torch(),
    }
    env = "".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        _write(zf, "setup.sh", (TEMPLATES / "gradescope_setup.sh").read_bytes(), 0o755)
        _write(zf, "run_autograder", (TEMPLATES / "gradescope_run_autograder").read_bytes(), 0o755)
        _write(zf, "grader.env", ("# written by grader lms gradescope build; sourced by setup.sh and run_autograder\n" + env).encode(), 0o600)
        for name in ("pyproject.toml", "README.md"):
            _write(zf, f"package/{name}", (root / name).read_bytes(), 0o644)
        _add_tree(zf, PACKAGE_DIR, "package/grader", {"__pycache__"})
        # The lab (solution, lab.py, manifest) is root-only: a worker that runs under a uid of its
        # own cannot read it even where neither bubblewrap nor Landlock hides it.
        _write_dir(zf, f"{lab_rel}/", 0o700)
        _add_tree(zf, lab_dir, lab_rel, LAB_EXCLUDE, 0o600)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, out)
    return out
