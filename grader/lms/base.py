"""A platform, as one plugin: everything that makes an LMS itself, on one class.

A platform registers one :class:`LmsFormat` subclass (``grader_register_lms_formats``) and gets
``grader lms NAME`` with it: ``run`` grades the upload inside the platform's grading container
(its folder layout and timeout are :attr:`LmsFormat.container`), ``scores`` writes the points
graded later as the platform's upload CSV, and any actions of its own (``add_commands``). What
the platform shows of a result (its ``payload``), what an upload that holds no submission
becomes there, and how the container must exit are the format's too. The grading is not: the
command line grades every upload through the one intake and the session, whatever the platform.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from grader.atomic import write_atomic
from grader.lms.container import Container
from grader.manifest import Hardware, LabManifest
from grader.results import GradeResult, Problem, Visibility

LabLoader = Callable[[str], LabManifest]
"""What the command line lends a platform's own actions: the lab an ``--exercise`` names, loaded."""


@dataclass(frozen=True)
class Export:
    """A platform's export of an assignment's submissions: who handed in each submission folder."""

    source: str
    """The export's own file that says so (not a submission), e.g. its metadata file."""
    people: Mapping[str, list[dict[str, str]]]
    """Submission folder -> its submitters (``name``, ``email``, ``sid``, each only when given)."""


class LmsFormat:
    """One platform: its result file, its container, its score upload, its subcommand.

    ``payload`` must be valid whatever happened: a graded result, an upload that holds no
    submission (``result.problem`` is ``submission``), or the grader's own failure."""

    name: ClassVar[str] = ""
    """``grader lms NAME``; unique across plugins."""
    label: ClassVar[str] = ""
    """The platform's name as people write it."""
    title: ClassVar[str] = ""
    """One line for ``grader lms --help``."""
    filename: ClassVar[str] = "results.json"
    container: ClassVar[Container | None] = None
    """Where the upload and the result file are in the platform's grading container, and its
    timeout; None for a platform that grades nowhere (no ``run``)."""
    defers_hidden: ClassVar[bool] = False
    """The platform shows every check it is given and releases nothing later, so checks that are
    not visible are left out on upload and their points come later, with the GPU's."""
    score_header: ClassVar[tuple[str, ...]] = ()
    """The columns of the platform's score-upload CSV (empty: no ``scores``)."""

    # --- the result file ------------------------------------------------------------------------

    def payload(self, result: GradeResult) -> dict[str, Any]:
        raise NotImplementedError

    def error_payload(self, reason: str) -> dict[str, Any]:
        """A valid file for when there is no result at all (the lab itself could not be loaded)."""
        raise NotImplementedError

    def dumps(self, payload: dict[str, Any]) -> str:
        return json.dumps(payload, indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    def write(self, result: GradeResult, path: Path) -> Path:
        return self.write_payload(self.payload(result), path)

    def write_payload(self, payload: dict[str, Any], path: Path) -> Path:
        """Write atomically: the platform never reads half a file."""
        return write_atomic(path, self.dumps(payload))

    def write_result(self, result: GradeResult | None, reason: str, path: Path) -> Path:
        """The platform's file for ``result`` (or, without one, for ``reason``); if rendering fails,
        the reason-only file, so the platform always finds a valid one."""
        try:
            payload = self.payload(result) if result is not None else self.error_payload(reason)
            self.dumps(payload)
        except Exception as exc:
            payload = self.error_payload(f"{reason or 'rendering the result failed'} ({type(exc).__name__}: {exc})")
        return self.write_payload(payload, path)

    def exit_code(self, result: GradeResult | None) -> int:
        """How the container exits once the file is written: 0 graded, 2 an upload that holds no
        submission, 3 the grader could not grade (SPEC's exit codes). A platform that reads the
        file only after a successful exit overrides this."""
        if result is None or (not result.gradable and result.problem is not Problem.submission):
            return 3
        return 2 if not result.gradable else 0

    # --- which points the upload grades ---------------------------------------------------------

    def plan(self, manifest: LabManifest) -> dict[str, list[str]]:
        """Which checks an upload grades and which come later on this platform, which has no GPU:
        ``upload``, ``gpu`` (graded later on a GPU machine) and ``hidden`` (not visible on upload
        where the platform releases nothing by itself; added later)."""
        plan: dict[str, list[str]] = {"upload": [], "gpu": [], "hidden": []}
        for cid, check in manifest.checks.items():
            visible = (check.visibility or manifest.lab.visibility) is Visibility.visible
            if check.requires is Hardware.gpu:
                plan["gpu"].append(cid)
            elif self.defers_hidden and not visible:
                plan["hidden"].append(cid)
            else:
                plan["upload"].append(cid)
        return plan

    def describe_plan(self, manifest: LabManifest) -> list[str]:
        """The plan in sentences, for the TA who builds or configures the autograder."""
        plan = self.plan(manifest)
        points = {k: sum(manifest.checks[c].points for c in v) for k, v in plan.items()}
        lines = [f"{manifest.id}: {points['upload']:g} of {manifest.max_score:g} points are graded on upload"]
        if plan["gpu"]:
            lines.append(
                f"DEFERRED: {points['gpu']:g} points need a GPU ({', '.join(plan['gpu'])}): students see them as pending; "
                "grade them later with `grader batch` (or `grader slurm`) on a GPU machine and upload the scores "
                f"(`grader lms {self.name} scores`; docs/lms.md)"
            )
        if plan["hidden"]:
            lines.append(
                f"DEFERRED: {points['hidden']:g} points are hidden on upload ({', '.join(plan['hidden'])}): "
                f"{self.label} releases nothing by itself, so they are added later (`grader lms {self.name} scores`)"
            )
        return lines

    def deferred(self, manifest: LabManifest) -> list[str]:
        """The checks whose points reach the platform later, through ``scores``."""
        plan = self.plan(manifest)
        return plan["gpu"] + plan["hidden"]

    # --- the score upload -----------------------------------------------------------------------

    def add_score_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of ``grader lms NAME scores`` beyond the batch folder, --exercise and --out."""

    def score_rows(
        self, student: str, people: Sequence[Mapping[str, str]], points: float, feedback: list[str], args: argparse.Namespace
    ) -> list[list[str]]:
        """The CSV rows of one student's deferred ``points`` (``feedback``: a line per check)."""
        raise NotImplementedError

    # --- the batch's input ----------------------------------------------------------------------

    def read_export(self, folder: Path) -> Export | None:
        """Who handed in each submission folder of ``folder``, when it is this platform's export
        of an assignment; None when it is not. UsageError (one line) for a broken export."""
        return None

    # --- the subcommand -------------------------------------------------------------------------

    def add_commands(self, actions: argparse._SubParsersAction, lab: LabLoader) -> None:
        """Actions of ``grader lms NAME`` of the platform's own, beside ``run`` and ``scores``:
        each parser gets ``set_defaults(handler=...)``, a function of the parsed arguments that
        returns the exit code (``lab`` loads the lab an ``--exercise`` names)."""
