"""The grader's side of one worker process: start it, exchange messages under deadlines, keep
its process tree contained, kill it.

Every read and write has a deadline and a byte cap, so a worker that hangs, floods, or goes
quiet while a daemonised child keeps the pipe open never holds the grader: when the deadline
passes the whole process tree is killed and the call reports a timeout.

Containment of the tree (:class:`Tree`): between calls the whole tree is frozen (the cgroup
freezer, else SIGSTOP to each of its processes), so nothing of the submission runs while the
grader times a baseline or computes references; after each call every process the submission
started is killed unless the lab lets them live. A process stopped by SIGSTOP can be resumed by
the kernel on the submission's behalf (a timer armed to send SIGCONT): so with SIGSTOP each
process's CPU time is read when the tree is frozen and again before it is thawed, and any
progress (or a process that was not there) is broken containment, never a measurement. The tree is what the worker's cgroup holds, or
what lies below the keeper (a child subreaper, so nothing leaves it), plus every process of the
worker's leased uid. Nothing else is ever signalled: a grading kills only what it started.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader.sandbox import procfs
from grader.sandbox.boot import wire
from grader.sandbox.cgroups import WorkerCgroup
from grader.sandbox.launchers import WorkerCommand
from grader.sandbox.uids import UidLease
from grader.text import printable

OUTPUT_HEAD = 2000
OUTPUT_TAIL = 4000
"""What the worker prints is kept up to these many bytes at its start and at its end; the rest is
read and discarded, so a chatty submission neither fills a file (its writes never fail) nor the
grader's memory."""


class OutputTail:
    """The start and the end of a stream, and how much was dropped between them."""

    def __init__(self, head: int = OUTPUT_HEAD, tail: int = OUTPUT_TAIL) -> None:
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.tail_limit:
            cut = len(self.tail) - self.tail_limit
            self.dropped += cut
            del self.tail[:cut]

    @property
    def total(self) -> int:
        """Bytes received so far, kept or not."""
        return len(self.head) + len(self.tail) + self.dropped

    def text(self) -> str:
        middle = f"\n... ({self.dropped} bytes of output not kept) ...\n" if self.dropped else ""
        raw = self.head.decode("utf-8", errors="replace") + middle + self.tail.decode("utf-8", errors="replace")
        return printable(raw, OUTPUT_HEAD + OUTPUT_TAIL + 100)


SETTLE_TIMEOUT_S = 2.0
STOPPED = {"T", "t", "Z", "X"}
FROZEN_CPU_SLACK_NS = 1_000_000
"""CPU time a frozen tree may still show, in all (a task's last accounting after /proc already
says it is stopped takes microseconds); more is a process that ran while frozen."""


class WorkerTimeout(Exception):
    """The worker did not answer before the deadline."""


class WorkerDied(Exception):
    """The worker exited (or closed its channel) without answering."""


class WorkerProtocolError(Exception):
    """The worker answered with bytes that are not a valid message."""


@dataclass
class Message:
    header: dict[str, Any]
    frames: list[bytes] = field(default_factory=list)


class WorkerProcess:
    """One running worker. Not thread-safe; one per grading."""

    def __init__(
        self,
        build: Callable[[tuple[int, int]], WorkerCommand],
        max_message_bytes: int,
        lease: UidLease | None = None,
        cgroup: WorkerCgroup | None = None,
        tmp: Path | None = None,
        keep_children: bool = False,
    ) -> None:
        """Start a worker; ``build`` turns the worker's two pipe ends into its command line. The
        uid ``lease`` (if any) is released once every process of that uid is gone; the
        ``cgroup`` and the private ``tmp`` folder are removed once the worker is."""
        self.max_message_bytes = max_message_bytes
        self._lease = lease
        self.output = OutputTail()
        self._tmp = tmp
        self.keep_children = keep_children
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self.command = build((req_r, resp_w))
            self.proc = subprocess.Popen(
                self.command.argv,
                env=self.command.env,
                pass_fds=self.command.pass_fds,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                start_new_session=True,
                cwd=self.command.cwd,
            )
        except BaseException:
            for fd in (req_w, resp_r, out_r):
                os.close(fd)
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            for fd in {req_r, resp_w, out_w, *getattr(self, "command", WorkerCommand([], {}, (), "", None)).pass_fds}:
                os.close(fd)
        self._w, self._r, self._out = req_w, resp_r, out_r
        os.set_blocking(self._out, False)
        self.tree = Tree(self.proc.pid, cgroup, self.command.uid)
        self.survivors: list[int] = []
        os.set_blocking(self._w, False)
        os.set_blocking(self._r, False)
        self._buffer = bytearray()

    # -- messages -----------------------------------------------------------------------------

    def send(self, header: dict[str, Any], arrays: list[np.ndarray | bytes], deadline: float) -> None:
        view = memoryview(wire.encode(header, arrays))
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout
            _, writable, _ = select.select([], [self._w], [], remaining)
            if not writable:
                raise WorkerTimeout
            try:
                view = view[os.write(self._w, view) :]
            except BrokenPipeError:
                raise WorkerDied from None

    def receive(self, deadline: float) -> Message:
        budget = self.max_message_bytes
        header_len = int.from_bytes(self._read(wire.LENGTH, deadline), "little")
        if header_len > wire.MAX_HEADER:
            raise WorkerProtocolError(f"a message header of {header_len} bytes")
        try:
            header = wire.parse_header(self._read(header_len, deadline))
        except wire.WireError as exc:
            raise WorkerProtocolError(str(exc)) from None
        frames = []
        for _ in range(header.get("frames", 0)):
            n = int.from_bytes(self._read(wire.LENGTH, deadline), "little")
            if n > budget:
                raise WorkerProtocolError(f"a frame of {n} bytes is over the {self.max_message_bytes}-byte limit")
            budget -= n
            frames.append(self._read(n, deadline))
        return Message(header, frames)

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout
            watched = [self._r] + ([self._out] if self._out >= 0 else [])
            readable, _, _ = select.select(watched, [], [], remaining)
            if self._out in readable:
                self._drain()
            if self._r not in readable:
                if not readable:
                    raise WorkerTimeout
                continue
            chunk = os.read(self._r, max(1 << 16, min(n - len(self._buffer), 1 << 22)))
            if not chunk:
                raise WorkerDied
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _drain(self, limit: int = 1 << 22) -> None:
        """Read what the worker printed (up to ``limit`` bytes now), keeping only its start and end."""
        while limit > 0 and self._out >= 0:
            try:
                chunk = os.read(self._out, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:  # every writer is gone
                os.close(self._out)
                self._out = -1
                return
            self.output.add(chunk)
            limit -= len(chunk)

    # -- life and death ---------------------------------------------------------------------------

    def kill(self) -> None:
        """Kill the worker's whole process tree (its cgroup, else everything below the keeper and
        every process of its leased uid), then release what it held."""
        if self.proc.poll() is None or self.tree.cgroup is not None:
            self.tree.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel always reaps a SIGKILL
            pass
        self._drain()
        for fd in (self._w, self._r, self._out):
            try:
                if fd >= 0:
                    os.close(fd)
            except OSError:
                pass
        self._w = self._r = self._out = -1
        if self.command.uid is not None and os.geteuid() == 0:
            self.survivors = reap(self.command.uid)
        if self.tree.cgroup is not None:
            self.tree.cgroup.remove()
        if self._lease is not None and not self.survivors:
            self._lease.release()
        for path in [*self.command.cleanup, *([self._tmp] if self._tmp else [])]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.command.cleanup = []
        self._tmp = None

    # -- containment between calls ------------------------------------------------------------

    def started(self, own_pid: int) -> None:
        """The worker said hello (before importing anything of the student's) with its pid as it
        sees it: note which process is the worker and which are ours (the keeper, bwrap)."""
        self.tree.mark(own_pid)

    def settle(self) -> bool:
        """After an answer: kill what the submission started (unless the lab allows it), then
        freeze the tree. False if it could not be frozen (the caller discards the worker)."""
        if not self.keep_children:
            self.tree.kill_children()
        return self.tree.freeze()

    def thaw(self) -> str | None:
        """Before a request: let the tree run again. Returns how the tree broke its freeze, if it
        ran while frozen (see :meth:`Tree.ran_while_frozen`); the caller discards the worker."""
        broken = self.tree.ran_while_frozen()
        self.tree.thaw()
        return broken

    def close(self, grace_s: float = 1.0) -> None:
        if self._w >= 0 and self.proc.poll() is None:
            self.thaw()  # a frozen worker would not read its exit
            try:
                self.send({"op": "exit"}, [], time.monotonic() + grace_s)
                self.proc.wait(timeout=grace_s)
            except (WorkerTimeout, WorkerDied, subprocess.TimeoutExpired, OSError):
                pass
        self.kill()

    def exit_description(self) -> str:
        """How the worker ended, in words ('exited with status 1', 'was killed by SIGKILL')."""
        code = self.proc.poll()
        if code is None:
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                return "stopped answering"
        # bwrap and prlimit report a signalled child as 128 + signal.
        if code < 0 or code > 128:
            sig = -code if code < 0 else code - 128
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            hint = {
                "SIGXCPU": " (CPU time limit)",
                "SIGXFSZ": " (file size limit)",
                "SIGKILL": " (killed: out of memory or a limit)",
                "SIGSEGV": " (segmentation fault)",
            }.get(name, "")
            if name == "SIGKILL" and self.tree.cgroup is not None and self.tree.cgroup.oom_kills():
                hint = " (its processes together ran out of the lab's memory budget)"
            return f"was killed by {name}{hint}"
        return f"exited with status {code}"

    def output_tail(self) -> str:
        """The start and end of what the worker printed, sanitised for terminals and XML."""
        return self.output.text()


class Tree:
    """The processes of one worker: found, frozen, thawed and killed as one."""

    def __init__(self, root: int, cgroup: WorkerCgroup | None, uid: int | None) -> None:
        self.root = root
        """The keeper's pid."""
        self.cgroup = cgroup
        self.uid = uid
        self.ours: set[int] = {root}
        """The keeper and bwrap's processes: never frozen or killed as the submission's children."""
        self.worker: int | None = None
        self._stopped: set[int] = set()
        self._cpu: dict[int, int] = {}
        """Each stopped process's CPU time (ns) when the tree was frozen by SIGSTOP."""
        self.resumed: str | None = None
        """Why the last freeze failed, when a stopped process ran again (broken containment)."""

    def members(self, table: dict[int, procfs.Proc] | None = None) -> set[int]:
        """Live (not zombie) processes of the tree: the cgroup's, else those below the keeper and
        those of the leased uid (``table``: a snapshot of /proc to use instead of a fresh one)."""
        if self.cgroup is not None:
            return self.cgroup.members()  # nothing leaves a cgroup without root's help
        table = procfs.table() if table is None else table
        found = _below(table, self.root) | {self.root}
        if self.uid is not None:
            found |= {pid for pid, proc in table.items() if proc.uid == self.uid}
        return {pid for pid in found if pid in table and table[pid].state not in DEAD}

    def mark(self, own_pid: int) -> None:
        """Name the worker: the process of the tree whose pid, as the worker sees it in its own pid
        namespace, is ``own_pid`` (its hello says so, before the student's code runs; by then the
        submission may already have forked). Its ancestors up to the keeper are ours."""
        table = procfs.table()
        below = _below(table, self.root)
        found = [pid for pid in below if _own_pid(pid) == own_pid]
        if len(found) != 1:
            return
        self.worker = found[0]
        self.ours = {self.root}
        pid = table[self.worker].ppid
        while pid in below:
            self.ours.add(pid)
            pid = table[pid].ppid

    def children(self, table: dict[int, procfs.Proc] | None = None) -> set[int]:
        """Live processes the submission started: everything in the tree but ours and the worker."""
        if self.worker is None:
            return set()
        kids = self.members(table) - self.ours - {self.worker}
        if kids and self.cgroup is not None:
            table = procfs.table() if table is None else table
            kids = {pid for pid in kids if pid in table and table[pid].state not in DEAD}
        return kids

    def kill_children(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            kids = self.children()
            if not kids:
                return
            _signal(kids, signal.SIGSTOP)  # stop first: a child cannot fork while we kill its siblings
            _signal(kids, signal.SIGKILL)
            time.sleep(0.002)

    def freeze(self) -> bool:
        """Freeze the tree; False if it could not be frozen (then ``resumed`` says so when a
        process the grader had stopped ran again: something sent it SIGCONT)."""
        self.resumed = None
        if self.cgroup is not None and self.cgroup.can_freeze:
            try:
                return self.cgroup.freeze(True)
            except OSError:
                return False
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        table = procfs.table()
        seen_stopped: set[int] = set()
        while True:
            targets = self.members(table) - self.ours
            # Stopped once, only a SIGCONT (the submission's: a timer's) can make it run again.
            again = {pid for pid in seen_stopped if pid in table and table[pid].state not in STOPPED}
            if again:
                self.resumed = f"{len(again)} process{'es' if len(again) > 1 else ''} resumed while being frozen"
                return False
            # Again to any not stopped yet: a SIGCONT before the stop took effect cancelled it.
            _signal({pid for pid in targets if pid not in table or table[pid].state not in STOPPED}, signal.SIGSTOP)
            self._stopped |= targets
            time.sleep(0.0002)  # a signal is delivered when the process next runs
            table = procfs.table()
            seen_stopped |= {pid for pid in targets if pid in table and table[pid].state in STOPPED}
            if all(table[pid].state in STOPPED for pid in targets if pid in table) and not (self.members(table) - self.ours - targets):
                self._cpu = {pid: cpu for pid in targets if (cpu := procfs.cpu_ns(pid)) is not None}
                return True
            if time.monotonic() > deadline:
                return False

    def ran_while_frozen(self) -> str | None:
        """With SIGSTOP freezing: how the tree made progress since it was frozen (CPU time, or a
        process that appeared), in words; None if it stayed still (or a cgroup froze it)."""
        if not self._cpu:
            return None
        table = procfs.table()
        appeared = self.members(table) - self.ours - set(self._cpu)
        if appeared:
            return f"{len(appeared)} process{'es' if len(appeared) > 1 else ''} appeared in it"
        used = sum(max(0, (procfs.cpu_ns(pid) or then) - then) for pid, then in self._cpu.items())
        if used > FROZEN_CPU_SLACK_NS:
            return f"it used {used / 1e6:.1f} ms of CPU time"
        return None

    def thaw(self) -> None:
        if self.cgroup is not None and self.cgroup.can_freeze:
            try:
                self.cgroup.freeze(False)
            except OSError:
                pass
            return
        _signal(self._stopped, signal.SIGCONT)
        self._stopped = set()
        self._cpu = {}

    def kill(self) -> None:
        """SIGKILL the whole tree, the keeper last (it is the subreaper that holds the rest). With
        a cgroup, its members; and, either way, whatever below the keeper has not joined it yet
        (a worker killed while it was still starting)."""
        if self.cgroup is not None:
            self.cgroup.kill()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            rest = (self.members() | descendants(self.root)) - {self.root}
            if not rest:
                break
            _signal(rest, signal.SIGSTOP)
            _signal(rest, signal.SIGKILL)
            time.sleep(0.002)
        _signal({self.root}, signal.SIGKILL)


DEAD = {"Z", "X"}


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _below(table: dict[int, procfs.Proc], root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, proc in table.items():
        kids.setdefault(proc.ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _own_pid(pid: int) -> int | None:
    """``pid`` as the process sees itself: the last NSpid entry (its innermost pid namespace)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return pid


def descendants(root: int) -> set[int]:
    """Every process below ``root``."""
    return _below(procfs.table(), root)


def processes_of(uid: int) -> list[int]:
    """Pids of live processes (zombies aside) whose real uid is ``uid``."""
    return [pid for pid, fields in procfs.statuses() if procfs.live(fields) and procfs.uids(fields)[:1] == [uid]]


def reap(uid: int, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL every process of ``uid`` until none is left; returns any that outlived the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = processes_of(uid)
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)

