"""The public API: everything a lab's ``lab.py`` and a third-party plugin may import.

Names here are kept stable across releases; anything else in ``grader`` is internal and may
change. docs/plugins.md shows each in use.

For a lab's ``lab.py`` (input generators and claims):
    ``Tolerance`` and ``compare`` (how outputs are compared), ``digits_apart`` (a number in a
    message with the digits that tell it from the one it was checked against), ``recipes`` (inputs described
    instead of sent, for weights too large for the pipe), ``Probe`` (what a claim receives),
    ``SubmissionFault`` (what a probe's calls raise), ``Finding`` (a claim's result with partial
    credit and a table), ``plain`` (the strict, bounded reader of plain values and JSON files:
    ``plain.read_file``, ``plain.loads``, ``plain.Limits``, ``plain.PlainError``).

For a checker plugin:
    ``Checker``, ``CheckSpec`` (its options' base; ``TimedCheckSpec`` for a timing, whose
    near misses are measured again), ``CheckContext`` (what ``run`` gets),
    ``Verdict``, ``Case``, ``Outputs``, ``Tolerance``, ``compare``, ``digits_apart``, ``sort_rows``,
    ``case_set_problems``, ``tolerance_problems`` and ``support_function_problems``
    (cross-reference checks for ``Options.problems``), ``LabManifest``, ``Hardware``.

For a reporter or a platform (LMS) plugin:
    ``Reporter``; ``LmsFormat`` with ``Container`` (its grading container) and ``Export``
    (its export of submissions); the result model ``GradeResult``, ``CheckResult``,
    ``Status``, ``Visibility``, ``Mismatch``, ``Problem``.

For any plugin: ``hookimpl``.
"""

from __future__ import annotations

from grader import recipes
from grader.checkers.base import CheckContext, Checker, Finding, Probe, TimedCheckSpec, Verdict
from grader.checkers.compare import compare, digits_apart, sort_rows
from grader.hookspecs import hookimpl
from grader.lab import Case
from grader.lms.base import Export, LmsFormat
from grader.lms.container import Container
from grader.manifest import (
    CheckSpec,
    Hardware,
    LabManifest,
    Tolerance,
    case_set_problems,
    support_function_problems,
    tolerance_problems,
)
from grader.reporters.base import Reporter
from grader.results import CheckResult, GradeResult, Mismatch, Problem, Status, Visibility
from grader.sandbox.boot import plain
from grader.sandbox.values import Outputs, SubmissionFault

__all__ = [
    "Case",
    "CheckContext",
    "CheckResult",
    "CheckSpec",
    "Checker",
    "Container",
    "Export",
    "Finding",
    "GradeResult",
    "Hardware",
    "LabManifest",
    "LmsFormat",
    "Mismatch",
    "Outputs",
    "Probe",
    "Problem",
    "Reporter",
    "Status",
    "SubmissionFault",
    "TimedCheckSpec",
    "Tolerance",
    "Verdict",
    "Visibility",
    "case_set_problems",
    "compare",
    "digits_apart",
    "hookimpl",
    "plain",
    "recipes",
    "sort_rows",
    "support_function_problems",
    "tolerance_problems",
]
