"""The batch's output folder: per-student reports written atomically, and what was already graded.

Every file is written to a temporary name and renamed into place, so a batch killed at any
moment leaves each file either whole or absent. A student counts as graded only once their
*record* (``.state/<student>.json``) exists: it is written last, after every report, and names
what the grading depended on (content hash, grader version, lab, seed). A re-run skips a
student whose record matches; anything else, a grading cut off half-way included, is redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from grader import __version__
from grader.atomic import write_atomic
from grader.batch.shard import Shard
from grader.errors import UsageError
from grader.manifest import LabManifest
from grader.results import GradeResult
from grader.seeds import Seeds

STATE = ".state"
RANDOM = "[a-z0-9_]" * 8
"""The random part of a name from ``tempfile`` (eight of these characters), as a glob."""


def lab_fingerprint(manifest: LabManifest) -> str:
    """A hash of the lab files a verdict depends on (manifest, solution, generators)."""
    digest = hashlib.sha256()
    for path in sorted(manifest.directory.iterdir()):
        if path.is_file() and path.suffix in (".toml", ".py") and not path.name.startswith("test_"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class Store:
    """The ``--out`` folder of one batch, or of one shard of it.

    A whole batch (and the merge of shards) holds ``.state/batch.lock`` exclusively. A shard holds
    it shared, so shards of one class write side by side while a whole batch waits, and holds
    ``.state/shard-K-of-N.lock`` exclusively, so each shard is graded by one process at a time.
    ``students`` (a shard's own) limits the sweep of half-written files to what this process
    owns; None sweeps everything, which only the exclusive holder may do.
    """

    def __init__(
        self, out: Path, manifest: LabManifest, seeds: Seeds, shard: Shard | None = None,
        students: Collection[str] | None = None, wait: bool = False,
    ) -> None:  # fmt: skip
        """``wait``: wait for the lock (a merge waits for the shards still writing) instead of stopping."""
        self.out = out
        self.state = out / STATE
        self.shard = shard
        try:
            self.state.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{out}: cannot create the output folder ({exc.strerror})") from None
        self._locks: list[int] = []
        self._wait = wait
        busy = f"{out}: another grader batch is writing there; wait for it or pick another --out"
        if shard is None:
            self._lock("batch.lock", fcntl.LOCK_EX, busy)
        else:
            self._lock("batch.lock", fcntl.LOCK_SH, f"{out}: a whole grader batch (or a merge) is writing there; wait for it")
            self._lock(f"{shard.name}.lock", fcntl.LOCK_EX, f"{out}: shard {shard} is already being graded there; wait for it")
        self._sweep(None if shard is None else students or ())
        self.key = {
            "grader": __version__,
            "exercise": manifest.id,
            "lab": lab_fingerprint(manifest),
            "seed": seeds.key,
        }

    def _lock(self, name: str, how: int, busy: str) -> None:
        fd = os.open(self.state / name, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self._wait:
                    raise
                print(f"grader batch: {self.out}: waiting for the gradings still writing there to end", file=sys.stderr, flush=True)
                fcntl.flock(fd, how)
        except BlockingIOError:
            os.close(fd)
            self.close()
            raise UsageError(busy) from None
        except OSError as exc:  # e.g. Lustre mounted without -o flock
            os.close(fd)
            self.close()
            raise UsageError(
                f"{self.out}: this file system does not support file locks ({exc.strerror}); "
                "use an --out on one that does (NFSv4, GPFS, Lustre mounted with -o flock)"
            ) from None
        self._locks.append(fd)

    def _sweep(self, students: Collection[str] | None) -> None:
        """Remove what a killed run left half-written (temporary files, staging folders).

        Only the given students' leftovers when ``students`` is set: another shard may be
        writing its own at this very moment."""
        if students is None:
            folders = [self.out, self.state, *(p for p in self.out.iterdir() if p.is_dir() and not p.is_symlink())]
            leftovers = [item for folder in folders for item in folder.glob(".*")]
        else:
            leftovers = []
            for student in students:
                name = glob.escape(student)
                leftovers += self.out.glob(f".{name}.{RANDOM}.staging")
                leftovers += self.state.glob(f".{name}.json.{RANDOM}.tmp")
                folder = self.student_dir(student)
                if folder.is_dir() and not folder.is_symlink():
                    leftovers += folder.glob(".*")
        for item in leftovers:
            if item.name.endswith(".staging") and item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            elif item.name.endswith(".tmp") and item.is_file():
                with contextlib.suppress(OSError):
                    item.unlink()

    def close(self) -> None:
        while self._locks:
            os.close(self._locks.pop())

    def student_dir(self, student: str) -> Path:
        return self.out / student

    def _record_path(self, student: str) -> Path:
        return self.state / f"{student}.json"

    def stored(self, student: str, digest: str) -> GradeResult | None:
        """The stored result if ``student`` was graded with this content, grader, lab and seed."""
        try:
            record = json.loads(self._record_path(student).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("sha256") != digest or any(record.get(k) != v for k, v in self.key.items()):
            return None
        try:
            result = GradeResult.model_validate_json((self.student_dir(student) / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # The record is written last, so a grading killed between its reports and its record leaves
        # the new result.json beside the old record: reuse it only if it is the same grading's.
        if result.submission_sha256 != digest or result.exercise != self.key["exercise"]:
            return None
        return result

    def why_not(self, student: str, digest: str) -> str:
        """Why :meth:`stored` has no result for ``student``, in a TA's words."""
        try:
            record = json.loads(self._record_path(student).read_text(encoding="utf-8"))
        except OSError:
            return "not graded yet"
        except ValueError:
            return "its record is unreadable: grade it again"
        if record.get("sha256") != digest:
            return "graded for other file content: the submission changed since"
        if record.get("seed") != self.key["seed"]:
            return "graded with another seed (is GRADER_SECRET_SEED, or its file, the one the grading used?)"
        if record.get("grader") != self.key["grader"]:
            return f"graded by grader {record.get('grader')}, this is {self.key['grader']}"
        if record.get("exercise") != self.key["exercise"] or record.get("lab") != self.key["lab"]:
            return "graded against another version of the lab's files"
        return "its result.json is missing, unreadable or from another grading: grade it again"

    def done(self, student: str, digest: str) -> GradeResult | None:
        """Like :meth:`stored`, but infrastructure failures do not count: they are retried on every run."""
        result = self.stored(student, digest)
        return result if result is not None and result.gradable else None

    def record(self, student: str, file: str, result: GradeResult, people: list[dict[str, str]] | None = None) -> None:
        """Mark ``student`` graded; called after every report of theirs is in place. ``people``
        (from an LMS export) is kept for uploading scores back."""
        data: dict[str, Any] = {
            "student": student,
            "file": file,
            "people": people or [],
            "sha256": result.submission_sha256,
            "gradable": result.gradable,
            "score": result.score,
            "max_score": result.max_score,
            **self.key,
        }
        write_atomic(self._record_path(student), json.dumps(data, indent=1) + "\n")

    def records(self) -> list[dict[str, Any]]:
        """Every student's record, current or not (readers check them against result.json)."""
        out = []
        for path in sorted(self.state.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("student"), str):
                out.append(record)
        return out

    def log_path(self, slot: int) -> Path:
        prefix = "" if self.shard is None else f"{self.shard.name}-"
        return self.state / f"{prefix}worker-{slot}.log"
