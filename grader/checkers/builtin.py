"""Built-in checkers, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from grader.api import Checker, hookimpl
from grader.checkers.compiled import CompiledCodeChecker
from grader.checkers.conservation import ConservationChecker
from grader.checkers.ghost import GhostChecker
from grader.checkers.gpu import GpuProfileChecker, GpuSpeedChecker
from grader.checkers.oracle import OracleChecker
from grader.checkers.property import PropertyChecker
from grader.checkers.rule import RuleChecker
from grader.checkers.speedup import CpuSpeedupChecker

BUILTIN_CHECKERS: tuple[type[Checker], ...] = (
    OracleChecker,
    ConservationChecker,
    PropertyChecker,
    CpuSpeedupChecker,
    RuleChecker,
    GhostChecker,
    GpuSpeedChecker,
    GpuProfileChecker,
    CompiledCodeChecker,
)


@hookimpl
def grader_register_checkers() -> list[type[Checker]]:
    return list(BUILTIN_CHECKERS)
