"""Built-in LMS formats, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from grader.hookspecs import hookimpl
from grader.lms.base import LmsFormat
from grader.lms.gradescope import GradescopeFormat
from grader.lms.prairielearn import PrairieLearnFormat

BUILTIN_LMS_FORMATS: tuple[type[LmsFormat], ...] = (GradescopeFormat, PrairieLearnFormat)


@hookimpl
def grader_register_lms_formats() -> list[type[LmsFormat]]:
    return list(BUILTIN_LMS_FORMATS)
