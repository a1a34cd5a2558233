"""Every visible process, read from /proc once per question: who holds which uid, how many tasks
a uid runs, which process is whose child. Processes that end while being read are skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass


def statuses() -> Iterator[tuple[int, dict[bytes, bytes]]]:
    """(pid, the fields of /proc/<pid>/status) for every visible process."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as fh:
                text = fh.read()
        except OSError:
            continue
        yield int(entry.name), dict(line.split(b":", 1) for line in text.splitlines() if b":" in line)


def uids(fields: dict[bytes, bytes]) -> list[int]:
    """A status's real, effective, saved and file-system uids (empty if unreadable)."""
    try:
        return [int(v) for v in fields[b"Uid"].split()]
    except (KeyError, ValueError):
        return []


def live(fields: dict[bytes, bytes]) -> bool:
    """Not a zombie or dead."""
    return fields.get(b"State", b"? ").split()[:1] not in ([b"Z"], [b"X"])


@dataclass(frozen=True)
class Proc:
    """One process in a snapshot of /proc."""

    ppid: int
    state: str
    uid: int


def table() -> dict[int, Proc]:
    """A snapshot of every visible process: its parent, state and (effective) uid, one read each."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry.name}/stat", os.O_RDONLY)
        except OSError:
            continue
        try:
            raw = os.read(fd, 1024)
            uid = os.fstat(fd).st_uid  # /proc/<pid> files belong to the process's effective uid
        except OSError:
            continue
        finally:
            os.close(fd)
        fields = raw[raw.rfind(b")") + 2 :].split()
        try:
            out[int(entry.name)] = Proc(int(fields[1]), fields[0].decode(), uid)
        except (IndexError, ValueError):
            continue
    return out


def cpu_ns(pid: int) -> int | None:
    """CPU time a process has used, in nanoseconds, summed over its threads (each thread's
    ``schedstat``: exact, where ``stat``'s ticks would miss a few milliseconds); None once gone."""
    total, found = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[0])
                found = True
        except (OSError, ValueError, IndexError):
            continue
    if found:
        return total
    try:  # a kernel without schedstat: the ticks of /proc/<pid>/stat
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        fields = raw[raw.rfind(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
