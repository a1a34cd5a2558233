"""Scores graded later (on a GPU machine, or hidden until release) as the CSV an LMS takes back.

A GPU lab on a platform without a GPU is graded twice by design: on upload, the LMS grades
what runs on its CPU and shows the GPU checks as pending; later a TA grades the class on a GPU
machine (``grader batch`` or ``grader slurm``, with the same secret seed), which grades every
check. This module reads that batch's stored results and gives, per student, the points the
upload could not give (the platform's :meth:`~grader.lms.base.LmsFormat.deferred` checks) to the
platform's format, which writes its own upload CSV (``score_header``, ``score_rows``).

A student whose batch result still has a deferred check pending (graded without a GPU) is
refused, never written as a zero.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from grader.batch.store import STATE, Store
from grader.errors import UsageError
from grader.lms.base import LmsFormat
from grader.manifest import LabManifest
from grader.results import GradeResult
from grader.seeds import Seeds


class ScoreRows:
    """The CSV and what could not be written into it, with the reason."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.left_out: dict[str, str] = {}


def _results(out: Path, manifest: LabManifest) -> list[tuple[dict, GradeResult | None, str]]:
    if not (out / STATE).is_dir():
        raise UsageError(f"{out}: no batch results there (no {STATE} folder); grade the class with grader batch first")
    store = Store(out, manifest, Seeds.from_env())
    try:
        found = []
        for record in store.records():
            student = record["student"]
            result = store.stored(student, record.get("sha256", ""))
            found.append((record, result, "" if result else store.why_not(student, record.get("sha256", ""))))
        return found
    finally:
        store.close()


def deferred_points(manifest: LabManifest, fmt: LmsFormat, result: GradeResult) -> tuple[float, list[str], str | None]:
    """The points of the checks the platform defers, a line per check for feedback, and why not
    (a deferred check still pending in this result)."""
    wanted = set(fmt.deferred(manifest))
    by_id = {c.id: c for c in result.checks}
    pending = [cid for cid in wanted if cid in by_id and by_id[cid].deferred]
    if pending:
        return 0.0, [], f"graded without a GPU: {', '.join(sorted(pending))} still pending; grade it on a GPU machine"
    checks = [by_id[cid] for cid in manifest.checks if cid in wanted and cid in by_id]
    lines = [f"{c.id}: {c.score:g}/{c.max_score:g} ({c.status.value})" for c in checks]
    return round(sum(c.score for c in checks), 6), lines, None


def score_rows(out: Path, manifest: LabManifest, fmt: LmsFormat, args: argparse.Namespace) -> ScoreRows:
    """The platform's upload CSV rows for every student graded in the batch folder ``out``
    (``args``: the flags the format added to ``grader lms NAME scores``)."""
    rows = ScoreRows()
    rows.rows.append(list(fmt.score_header))
    for record, result, why in _results(out, manifest):
        student = record["student"]
        if result is None:
            rows.left_out[student] = why
            continue
        if not result.gradable:
            rows.left_out[student] = f"not gradable: {result.error}"
            continue
        points, lines, why = deferred_points(manifest, fmt, result)
        if why:
            rows.left_out[student] = why
            continue
        rows.rows += fmt.score_rows(student, record.get("people") or [], points, lines, args)
    return rows


def to_csv(rows: ScoreRows) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows.rows)
    return buffer.getvalue()
