"""Shards: a class split into N parts that separate processes (Slurm array tasks) grade at once.

A student's shard is a hash of their name, not their place in the roster, so adding or removing
students never moves anyone else: a re-run of shard K after the folder changed grades the same
students it graded before, and the store skips those already done.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from grader.errors import UsageError

FORM = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``1/4`` to ``4/4``)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = FORM.match(text.strip())
        if not match:
            raise UsageError(f"--shard {text!r}: expected K/N, e.g. 2/4 (shard 2 of 4)")
        index, count = int(match[1]), int(match[2])
        if not 1 <= index <= count:
            raise UsageError(f"--shard {text!r}: K must be between 1 and N")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """For file names: ``shard-2-of-4``."""
        return f"shard-{self.index}-of-{self.count}"

    def holds(self, student: str) -> bool:
        return shard_of(student, self.count) == self.index


def shard_of(student: str, count: int) -> int:
    """The 1-based shard of ``student`` among ``count``: sha256 of the name, modulo the count."""
    digest = hashlib.sha256(student.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1
