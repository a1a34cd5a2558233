"""Helpers shared by the tests (importable as ``support``; pytest puts tests/ on the path)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from grader.results import GradeResult
from grader.selftest import materialize

ROOT = Path(__file__).resolve().parent.parent
PHASE = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels"
LAB01 = PHASE / "lab-01-moe-routing"


def wrong_file(name: str, lab: Path = LAB01) -> str:
    """A lab's known-wrong submission as a student would hand it in: ``wrong/<name>.patch``
    applied to the current solution."""
    return materialize(lab / "wrong" / f"{name}.patch", lab).data.decode("utf-8")


def tight_limits(text: str) -> str:
    """A manifest edit: short call and import limits, so hanging submissions cost seconds."""
    text = re.sub(r"^time_limit_s = \d+", "time_limit_s = 2", text, count=1, flags=re.M)
    text = text.replace('hardware = "cpu"\n', 'hardware = "cpu"\nimport_time_limit_s = 3\n', 1)
    return re.sub(r"^time_limit_s = 30$", "time_limit_s = 4", text, flags=re.M)


def run_grader_process(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m grader ...`` as a separate process, as a user or an LMS would."""
    return subprocess.run(
        [sys.executable, "-m", "grader", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def statuses(result: GradeResult) -> dict[str, str]:
    return {c.id: c.status.value for c in result.checks}
