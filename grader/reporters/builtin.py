"""Built-in reporters, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from grader.hookspecs import hookimpl
from grader.reporters.base import Reporter
from grader.reporters.jsonfile import JsonReporter
from grader.reporters.junit import JUnitReporter
from grader.reporters.markdown import MarkdownReporter
from grader.reporters.terminal import TerminalReporter

BUILTIN_REPORTERS: tuple[type[Reporter], ...] = (JsonReporter, MarkdownReporter, JUnitReporter, TerminalReporter)


@hookimpl
def grader_register_reporters() -> list[type[Reporter]]:
    return list(BUILTIN_REPORTERS)
