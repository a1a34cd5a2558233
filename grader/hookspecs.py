"""The plugin contract: every hook the grader calls, grouped by when it fires.

Built-in checkers, reporters and LMS formats are registered through these same hooks. A
third-party plugin is a module with ``@grader.hookimpl`` functions, installed under the
``grader`` entry-point group::

    [project.entry-points.grader]
    my_checks = "my_package.grader_plugin"

A hook implementation may accept any subset of a spec's parameters. Set
``GRADER_DISABLE_PLUGIN_AUTOLOAD=1`` to load only the built-ins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from grader.checkers.base import Checker
    from grader.lms.base import LmsFormat
    from grader.manifest import LabManifest
    from grader.reporters.base import Reporter
    from grader.results import CheckResult, GradeResult

PROJECT = "grader"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks: called once, when the plugin manager is built -------------------------


@hookspec
def grader_register_checkers() -> list[type[Checker]]:
    """Register checker classes.

    Fires once when the grader builds its plugin registry. A checker's ``name`` is the
    ``kind`` manifests use to select it and must be unique across all plugins (a duplicate
    is an error, never a silent override); its ``Options`` model validates manifest entries.

    :return: a list of :class:`~grader.checkers.base.Checker` subclasses
    """


@hookspec
def grader_register_reporters() -> list[type[Reporter]]:
    """Register reporter classes.

    Fires once when the grader builds its plugin registry. Every registered reporter writes
    its file (or prints) after each grading, from the one result model; names are unique.

    :return: a list of :class:`~grader.reporters.base.Reporter` subclasses
    """


@hookspec
def grader_register_lms_formats() -> list[type[LmsFormat]]:
    """Register LMS platforms: one :class:`~grader.lms.base.LmsFormat` subclass each.

    Fires once when the grader builds its plugin registry (the command line builds it before
    parsing). A platform's class is the whole platform: its result file, its grading container
    (``grader lms NAME run``), its score upload (``grader lms NAME scores``), its export (read
    by ``grader batch``) and its own actions. Names are unique.

    :return: a list of :class:`~grader.lms.base.LmsFormat` subclasses
    """


# --- grading hooks: called for every submission, in this order ----------------------------------


@hookspec
def grader_grading_started(manifest: LabManifest, submission: Path) -> None:
    """A grading is about to start.

    Fires after the submission was read and its lab resolved, before any worker starts.

    :param manifest: the lab's validated manifest
    :param submission: the graded file's name, as a path
    """


@hookspec
def grader_check_finished(manifest: LabManifest, result: CheckResult) -> None:
    """One check has its verdict.

    Fires after each check, in manifest order, while later checks may still be running;
    use it for progress output or streaming.

    :param manifest: the lab's validated manifest
    :param result: the check's result (status, score, message)
    """


@hookspec
def grader_grading_finished(result: GradeResult, out_dir: Path | None) -> None:
    """A grading is complete and its reports have been written.

    Fires once per submission graded, whatever the entry point, after every reporter ran;
    ``result`` is final.

    :param result: the whole grading result, as written to result.json
    :param out_dir: the folder the reports were written to (None if none were written)
    """
