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
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from grader import __version__
from grader.atomic import write_atomic
from grader.errors import UsageError
from grader.manifest import LabManifest
from grader.results import GradeResult
from grader.seeds import Seeds

STATE = ".state"


def lab_fingerprint(manifest: LabManifest) -> str:
    """A hash of the lab files a verdict depends on (manifest, solution, generators)."""
    digest = hashlib.sha256()
    for path in sorted(manifest.directory.iterdir()):
        if path.is_file() and path.suffix in (".toml", ".py") and not path.name.startswith("test_"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class Store:
    """The ``--out`` folder of one batch; one batch at a time may write to it."""

    def __init__(self, out: Path, manifest: LabManifest, seeds: Seeds) -> None:
        self.out = out
        self.state = out / STATE
        try:
            self.state.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{out}: cannot create the output folder ({exc.strerror})") from None
        self._lock = os.open(self.state / "batch.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise UsageError(f"{out}: another grader batch is writing there; wait for it or pick another --out") from None
        self._sweep()
        self.key = {
            "grader": __version__,
            "exercise": manifest.id,
            "lab": lab_fingerprint(manifest),
            "seed": seeds.key,
        }

    def _sweep(self) -> None:
        """Remove what a killed batch left half-written (its temporary files and staging folders)."""
        for folder in (self.out, self.state, *(p for p in self.out.iterdir() if p.is_dir() and not p.is_symlink())):
            for item in folder.glob(".*"):
                if item.name.endswith(".staging") and item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                elif item.name.endswith(".tmp") and item.is_file():
                    with contextlib.suppress(OSError):
                        item.unlink()

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def student_dir(self, student: str) -> Path:
        return self.out / student

    def _record_path(self, student: str) -> Path:
        return self.state / f"{student}.json"

    def done(self, student: str, digest: str) -> GradeResult | None:
        """The stored result if ``student`` was graded with this content, grader, lab and seed."""
        try:
            record = json.loads(self._record_path(student).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("sha256") != digest or any(record.get(k) != v for k, v in self.key.items()):
            return None
        if not record.get("gradable"):
            return None  # infrastructure failures are retried on every run
        try:
            return GradeResult.model_validate_json((self.student_dir(student) / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def record(self, student: str, file: str, result: GradeResult) -> None:
        """Mark ``student`` graded; called after every report of theirs is in place."""
        data: dict[str, Any] = {
            "student": student,
            "file": file,
            "sha256": result.submission_sha256,
            "gradable": result.gradable,
            "score": result.score,
            "max_score": result.max_score,
            **self.key,
        }
        write_atomic(self._record_path(student), json.dumps(data, indent=1) + "\n")

    def log_path(self, slot: int) -> Path:
        return self.state / f"worker-{slot}.log"
