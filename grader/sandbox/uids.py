"""Worker uids that belong to one worker alone, leased for its life.

A root grader runs every worker as a uid of its own: RLIMIT_NPROC counts processes per uid, and
a grading without a cgroup ends by killing every process of its worker's uid. So a leased uid
must be nobody else's, and these are the reasons it is:

* **Not an account, not in use.** A uid that the user database names (``getpwuid``, so NSS and
  LDAP too) or whose group exists is never taken, nor one that any process on this machine
  holds as its real, effective, saved or file-system uid (a scan of ``/proc`` before and after
  the lock is taken). Debian's ``slurm`` (64030) and systemd's dynamic users are safe that way
  even inside the range, which starts far above them anyway.
* **Two graders sharing ``/run``** (one host, or one container): an exclusive ``flock`` on
  ``<lock dir>/<uid>.lock``, held while any process of the worker lives. The kernel drops it if
  the grader dies; the file is unlinked on release (with an inode check when taking it, so a
  lock on an unlinked file never counts).
* **Two graders sharing the pid namespace but not ``/run``** (chroots): each sees the other's
  workers in ``/proc`` and skips their uids. Only two picks of the same uid within the same
  ~0.1 s before either worker starts could collide.
* **Two graders in separate containers** (separate ``/run`` and pid namespaces): neither can see
  nor signal the other's processes (killing by uid scans only its own ``/proc``), so sharing a
  uid costs at most a shared RLIMIT_NPROC count. Picks are uniform over 2^27 uids: with k
  workers alive on the host, a new lease meets one of them with chance (k - 1) / 2^27 (64
  workers: 5e-7).

The range is ``GRADER_WORKER_UIDS=FIRST-LAST`` or, by default, 1,900,000,000 + [0, 2^27): above
systemd's container range (524288-1879048191) and rootless sub-uid ranges (from 100000, 65536 a
user), below systemd's foreign range (2147352576-) and 2^31. In a user namespace that does not
map it (rootless Podman, Docker with userns-remap) the mapped uids 20000-59999 are used instead.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import secrets
from pathlib import Path

from grader.sandbox import procfs

RANGE_ENV = "GRADER_WORKER_UIDS"
LOCKS_ENV = "GRADER_UID_LOCKS"
DEFAULT_FIRST = 1_900_000_000
DEFAULT_SIZE = 1 << 27
NAMESPACE_FALLBACK = (20_000, 59_999)
ATTEMPTS = 64


def lock_dir() -> Path:
    return Path(os.environ.get(LOCKS_ENV) or ("/run/grader-uids" if os.path.isdir("/run") else "/tmp/grader-uids"))


def configured_range() -> tuple[int, int]:
    """The (first, last) uid range from ``GRADER_WORKER_UIDS``, else the default; ValueError if malformed."""
    text = os.environ.get(RANGE_ENV, "").strip()
    if not text:
        return DEFAULT_FIRST, DEFAULT_FIRST + DEFAULT_SIZE - 1
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last)
    except ValueError:
        raise ValueError(f"{RANGE_ENV}={text!r}: expected FIRST-LAST, e.g. 1900000000-1900999999") from None
    if not sep or not 1000 <= lo <= hi < 2**32 - 1:
        raise ValueError(f"{RANGE_ENV}={text!r}: expected FIRST-LAST with 1000 <= FIRST <= LAST < 4294967295")
    return lo, hi


def _mapped() -> list[tuple[int, int]]:
    """The uid ranges this user namespace maps, as inclusive (first, last)."""
    try:
        lines = Path("/proc/self/uid_map").read_text().splitlines()
    except OSError:
        return [(0, 2**32 - 2)]
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            inside, count = int(parts[0]), int(parts[2])
            out.append((inside, inside + count - 1))
    return out


def candidate_ranges() -> list[tuple[int, int]]:
    """Where leases are drawn from: the configured range as far as this namespace maps it."""
    lo, hi = configured_range()
    mapped = _mapped()
    ranges = [(max(lo, a), min(hi, b)) for a, b in mapped if max(lo, a) <= min(hi, b)]
    if not ranges and not os.environ.get(RANGE_ENV):
        flo, fhi = NAMESPACE_FALLBACK
        ranges = [(max(flo, a), min(fhi, b)) for a, b in mapped if max(flo, a) <= min(fhi, b)]
    return ranges


def uids_in_use() -> set[int]:
    """Every uid any visible process holds (real, effective, saved, file system)."""
    return {uid for _, fields in procfs.statuses() for uid in procfs.uids(fields)}


def _named(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            continue
        except OSError:
            return True  # the user database could not answer: do not risk it
    return False


def _pick(ranges: list[tuple[int, int]]) -> int:
    total = sum(b - a + 1 for a, b in ranges)
    n = secrets.randbelow(total)
    for a, b in ranges:
        if n <= b - a:
            return a + n
        n -= b - a + 1
    raise AssertionError("unreachable")


class UidLease:
    """A uid no account and no process uses, held exclusively until :meth:`release`."""

    def __init__(self) -> None:
        ranges = candidate_ranges()
        if not ranges:
            lo, hi = configured_range()
            raise RuntimeError(
                f"worker uids {lo}-{hi} are not mapped in this user namespace; "
                f"set {RANGE_ENV}=FIRST-LAST to free uids that /proc/self/uid_map maps"
            )
        folder = lock_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        busy = uids_in_use()
        for _ in range(ATTEMPTS):
            uid = _pick(ranges)
            if uid in busy or _named(uid):
                continue
            path = folder / f"{uid}.lock"
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except (BlockingIOError, FileNotFoundError):
                same = False
            if not same or uid in uids_in_use():
                os.close(fd)
                continue
            self.uid, self._fd, self._path = uid, fd, path
            return
        raise RuntimeError(f"no free worker uid after {ATTEMPTS} tries in {ranges} (set {RANGE_ENV} to a larger range)")

    def release(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            try:
                os.unlink(self._path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()


def leased(uid: int) -> bool:
    """Whether some grader holds a lease on ``uid`` right now (for tests and diagnostics)."""
    path = lock_dir() / f"{uid}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
