"""Every visible process, read from /proc once per question: who holds which uid, how many tasks
a uid runs, which process is whose child. Processes that end while being read are skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator


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


def table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, state, start time) for every visible process, from /proc/<pid>/stat."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        try:
            out[int(entry.name)] = (int(fields[1]), fields[0].decode(), int(fields[19]))
        except (IndexError, ValueError):
            continue
    return out
