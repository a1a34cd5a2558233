"""Leases of worker uids, so that concurrent gradings on one machine never share one.

Every worker runs as its own uid: RLIMIT_NPROC counts processes per uid, and after a grading
every process of the worker's uid is killed. Two gradings sharing a uid would throttle and
kill each other's workers. A lease is an exclusive ``flock`` on a per-uid lock file, held by
the grader for the worker's life; the kernel drops it if the grader dies, so nothing goes stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_DIR = Path(os.environ.get("GRADER_UID_LOCKS", "/run/grader-uids" if os.path.isdir("/run") else "/tmp/grader-uids"))
POOL = 4096


class UidLease:
    """An exclusively held uid in [base, base + POOL)."""

    def __init__(self, base: int, start: int = 0) -> None:
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        for i in range(POOL):
            uid = base + (start + i) % POOL
            fd = os.open(LOCK_DIR / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise RuntimeError(f"all {POOL} worker uids from {base} are in use")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()
