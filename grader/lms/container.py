"""An LMS's grading container, as a platform describes it: where the upload is, where the result
file goes, how long the platform waits. Grades nothing: the command line grades the upload
through the one intake and the session, and the platform's format writes what it shows."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_ENV = "GRADER_LMS_TIMEOUT_S"
"""The platform's timeout for one grading job, in seconds, where the course set another one
(PrairieLearn's info.json ``timeout``; the Gradescope zip's ``--timeout``)."""


@dataclass(frozen=True)
class Container:
    """One platform's grading container."""

    root_env: str
    """The variable that moves the container's root (for trying it outside the platform)."""
    default_root: str
    upload: str
    """Where the upload is, below the root."""
    target: str
    """Where the platform reads the result file, below the root."""
    timeout_s: float
    """The platform's default timeout for one job."""

    def root(self, environ: Mapping[str, str] = os.environ) -> Path:
        return Path(environ.get(self.root_env) or self.default_root)

    def deadline_s(self, environ: Mapping[str, str] = os.environ) -> float:
        """The grading's own deadline under the platform's timeout ($GRADER_LMS_TIMEOUT_S, else its default)."""
        timeout = self.timeout_s
        try:
            timeout = float(environ.get(TIMEOUT_ENV) or timeout)
        except ValueError:
            pass
        return deadline_for(timeout)


def deadline_for(timeout_s: float) -> float:
    """The grading's own deadline under a platform timeout: room left to start Python, write the
    file and exit (a fifth of the timeout, at least 5 s)."""
    return max(1.0, timeout_s - max(5.0, 0.2 * timeout_s))
