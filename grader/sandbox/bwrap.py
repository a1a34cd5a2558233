"""What the installed bubblewrap can do, read from the binary itself rather than its version.

Distributions ship bubblewrap from 0.4 (Ubuntu 20.04, Debian 11) to the newest. The options the
grader's command line uses arrived at different times: ``--clearenv`` and ``--perms`` in 0.5.0,
``--size`` in 0.7.0 (so Ubuntu 22.04's 0.6.1, Gradescope's default base image, has no ``--size``).
:func:`detect` parses ``bwrap --help`` for the option names; the launcher builds its command
from what is there and says which guarantee a missing option costs.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass

OPTION = re.compile(r"^\s+(--[a-z0-9][a-z0-9-]*)", re.M)
VERSION = re.compile(r"(\d+(?:\.\d+)+)")
# Without these there is no sandbox to build (all are in 0.4.0, the oldest release supported).
REQUIRED = (
    "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session",
    "--ro-bind", "--bind", "--dev", "--proc", "--tmpfs", "--remount-ro", "--symlink", "--dir", "--chdir",
    "--seccomp", "--setenv", "--cap-drop", "--cap-add",
)  # fmt: skip


@dataclass(frozen=True)
class Bwrap:
    """One bubblewrap binary: where it is, its version, and the options its ``--help`` lists."""

    path: str
    version: str
    options: frozenset[str]

    def has(self, option: str) -> bool:
        return option in self.options

    def missing(self) -> list[str]:
        """Required options this binary lacks (then it cannot be used at all)."""
        return [o for o in REQUIRED if o not in self.options]

    def describe(self) -> str:
        return f"bubblewrap {self.version}"


@functools.lru_cache(maxsize=8)
def detect(path: str) -> Bwrap | None:
    """Ask the binary at ``path`` for its version and options; None if it does not answer."""
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        helptext = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = VERSION.search(version.stdout)
    options = frozenset(OPTION.findall(helptext.stdout + helptext.stderr))
    if not options:
        return None
    return Bwrap(path, match.group(1) if match else "unknown", options)
