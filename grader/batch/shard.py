"""Shards: a class split into N parts that separate processes (Slurm array tasks) grade at once.

Two ways to say who is in which shard:

* a **plan** (``OUT/.state/shards-of-N.json``, written by ``grader slurm`` when it submits):
  the students dealt out in turn over the N shards, so their sizes differ by one at most (a
  hash alone put 7/11/10/2 of 30 students in 4 shards), or one student per shard. Every task of
  an array reads the same plan, so a roster that changes while the array runs moves no one;
  ``grader slurm`` keeps the plan while the roster stays the same.
* otherwise, and for a student the plan does not name (added since), a **hash** of the name:
  adding or removing students never moves anyone else, so a re-run of shard K meets the
  students it met before, and the store skips those already done.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.atomic import write_atomic
from grader.errors import UsageError

FORM = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``1/4`` to ``4/4``), by ``plan`` where it names the student."""

    index: int
    count: int
    plan: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

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
        return self.plan.get(student, shard_of(student, self.count)) == self.index

    def planned(self, state: Path) -> Shard:
        """This shard, with the plan kept in the ``state`` folder for its count (if there is one)."""
        return Shard(self.index, self.count, read_plan(state, self.count))


def shard_of(student: str, count: int) -> int:
    """The 1-based shard of ``student`` among ``count``: sha256 of the name, modulo the count."""
    return int.from_bytes(_digest(student)[:8], "big") % count + 1


def _digest(student: str) -> bytes:
    return hashlib.sha256(student.encode("utf-8")).digest()


def balanced(students: Collection[str], count: int) -> dict[str, int]:
    """Every student's shard, dealt out in turn in the order of their names' hashes (which does
    not follow the names, so shards do not fill by alphabet): sizes differ by one at most."""
    order = sorted(students, key=_digest)
    return {student: i % count + 1 for i, student in enumerate(order)}


def plan_path(state: Path, count: int) -> Path:
    return state / f"shards-of-{count}.json"


def read_plan(state: Path, count: int) -> dict[str, int]:
    """The plan for ``count`` shards kept in ``state``; empty if there is none (or it is unreadable)."""
    try:
        data = json.loads(plan_path(state, count).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    shards = data.get("shards") if isinstance(data, dict) else None
    if not isinstance(shards, dict):
        return {}
    return {s: k for s, k in shards.items() if isinstance(s, str) and isinstance(k, int) and 1 <= k <= count}


def write_plan(state: Path, count: int, students: Collection[str]) -> dict[str, int]:
    """Plan ``count`` balanced shards of ``students`` (the plan already there if it has the same
    students: an array still running keeps its shards); the plan."""
    kept = read_plan(state, count)
    if set(kept) == set(students):
        return kept
    plan = balanced(students, count)
    write_atomic(plan_path(state, count), json.dumps({"count": count, "shards": plan}, indent=1) + "\n")
    return plan
