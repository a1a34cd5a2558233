"""The plugin manager and the typed facade core code calls hooks through.

Built-ins are registered first, then the ``grader`` entry-point group (unless
``GRADER_DISABLE_PLUGIN_AUTOLOAD`` is set); ``check_pending`` rejects misspelled hooks. Core
code never touches ``pm.hook`` directly: it calls the annotated methods of :class:`Plugins`.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from grader import hookspecs
from grader.errors import InfrastructureError

if TYPE_CHECKING:
    from grader.checkers.base import Checker
    from grader.lms.base import LmsFormat
    from grader.manifest import LabManifest
    from grader.reporters.base import Reporter
    from grader.results import CheckResult, GradeResult

BUILTIN_PLUGINS = ("grader.checkers.builtin", "grader.reporters.builtin", "grader.lms.builtin")
AUTOLOAD_OFF = "GRADER_DISABLE_PLUGIN_AUTOLOAD"

T = TypeVar("T")


class PluginError(InfrastructureError):
    """A plugin that cannot be loaded or registers a name that is taken."""


def _unique(kind: str, classes: list[list[type[T]]]) -> dict[str, type[T]]:
    out: dict[str, type[T]] = {}
    for group in reversed(classes):  # pluggy returns LIFO; keep registration order
        for cls in group or []:
            name = getattr(cls, "name", "")
            if not name:
                raise PluginError(f"{kind} {cls.__module__}.{cls.__qualname__} has no name")
            if name in out and out[name] is not cls:
                other = out[name]
                raise PluginError(
                    f"{kind} name {name!r} is registered by both {other.__module__}.{other.__qualname__} "
                    f"and {cls.__module__}.{cls.__qualname__}"
                )
            out[name] = cls
    return out


class Plugins:
    """Typed access to every hook."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    # registration
    @functools.cached_property
    def checker_classes(self) -> dict[str, type[Checker]]:
        return _unique("checker", self.pm.hook.grader_register_checkers())

    @functools.cached_property
    def reporter_classes(self) -> dict[str, type[Reporter]]:
        return _unique("reporter", self.pm.hook.grader_register_reporters())

    @functools.cached_property
    def lms_classes(self) -> dict[str, type[LmsFormat]]:
        return _unique("LMS format", self.pm.hook.grader_register_lms_formats())

    def checkers(self) -> tuple[type[Checker], ...]:
        return tuple(self.checker_classes.values())

    def checker(self, kind: str) -> Checker:
        return self.checker_classes[kind]()

    # grading lifecycle
    def grading_started(self, manifest: LabManifest, submission: Path) -> None:
        self.pm.hook.grader_grading_started(manifest=manifest, submission=submission)

    def check_finished(self, manifest: LabManifest, result: CheckResult) -> None:
        self.pm.hook.grader_check_finished(manifest=manifest, result=result)

    def grading_finished(self, result: GradeResult, out_dir: Path | None) -> None:
        self.pm.hook.grader_grading_finished(result=result, out_dir=out_dir)

    def distributions(self) -> dict[str, str]:
        """Third-party plugin names and the versions of the distributions that provided them."""
        return {
            f"{self.pm.get_name(plugin)}": f"{dist.project_name} {dist.version}"
            for plugin, dist in self.pm.list_plugin_distinfo()
        }


def build(autoload: bool | None = None, extra: list[Any] | None = None) -> Plugins:
    """A fresh plugin registry: built-ins, entry points (if enabled), then ``extra`` plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_OFF)
    if autoload:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as exc:
            raise PluginError(f"a grader plugin failed to load: {type(exc).__name__}: {exc}") from exc
    for plugin in extra or []:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a grader plugin implements an unknown hook: {exc}") from exc
    return Plugins(pm)


@functools.lru_cache(maxsize=1)
def default() -> Plugins:
    """The process-wide registry."""
    return build()
