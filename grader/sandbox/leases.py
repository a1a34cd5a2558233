"""Folders a grading holds: an ``flock`` on the folder itself, so a sweep takes only what no one holds.

Graders that share a temp folder or a cgroup tree need not share a pid namespace (containers on
one node, enroot/pyxis, Apptainer with ``--pid``, a grader under ``unshare --pid``): a pid in a
folder's name says nothing there about whether its grader still runs, and a sweep that trusted it
deleted the private copy of a grading in progress. A lock does not have that flaw: the kernel
drops it when its holder exits, whatever namespace the holder ran in, and every process that
opens the same folder sees it.

A folder is locked from the moment its name can be seen to the moment it is removed, so a sweep
never meets a live folder unlocked: :func:`hold` makes it, locks it, then checks that the name
still leads to the folder it locked (a sweep may have taken it between the two steps; it then
tries another name). Where the file system has no locks at all, nothing is locked and nothing
is swept: a leftover is better than a deleted grading.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ATTEMPTS = 16


@dataclass
class Lease:
    """A folder this process made and holds until :meth:`release`."""

    path: Path
    fd: int | None
    """The locked descriptor; None where the file system offers no locks."""

    def release(self) -> None:
        """Drop the lock (after the folder is removed, so no sweep races its removal)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def hold(parent: Path, prefix: str, mode: int = 0o700) -> Lease:
    """A new folder ``parent/<prefix><random>``, locked by this process. OSError if it cannot be made."""
    for _ in range(ATTEMPTS):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # a sweep took it before this process could lock it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a sweep holds it and is removing it
            continue
        except OSError:  # no locks on this file system: nothing here is swept either
            os.close(fd)
            return Lease(path, None)
        try:
            same = os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:
            return Lease(path, fd)
        os.close(fd)  # a sweep removed it between the mkdir and the lock
    raise OSError(f"could not make a folder of its own in {parent} in {ATTEMPTS} attempts")


def sweep(parent: Path, prefix: str, remove: Callable[[Path], None]) -> list[Path]:
    """Remove (with ``remove``) every ``parent/<prefix>*`` folder that no process holds; the ones removed.

    Each is locked while it is removed, so the folder a new :func:`hold` makes under a reused name
    is never the one being removed. A folder this process holds is held here too, so it stays."""
    taken: list[Path] = []
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return taken
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live grading (or no locks here: leave it)
            os.close(fd)
            continue
        try:
            remove(Path(entry.path))
            taken.append(Path(entry.path))
        finally:
            os.close(fd)
    return taken
