"""The keeper: the first process of every worker, outside the sandbox, the grader's own uid.

Started as ``python -I -S keeper.py [--cgroup PROCS]... [--tree-cgroup PROCS --thaw STATE] --
COMMAND...``. It

* enters the worker's cgroups (its pid into each ``cgroup.procs``) before anything else runs,
  so every process of the worker is charged to the worker's budget from its first instruction;
  COMMAND's process also enters the ``--tree-cgroup``, the part the grader freezes between
  calls: the keeper itself is never frozen;
* becomes a child subreaper, so no descendant leaves its tree by double-forking: the grader
  finds the whole tree below the keeper's pid even without a cgroup or a pid namespace;
* runs COMMAND (prlimit, then bwrap or setpriv, then the worker) and, once that process exits,
  kills whatever is left below it and exits with its status (128 + N when killed by signal N,
  as bwrap and prlimit report it);
* dies with the grader: on the grader's death it gets SIGTERM, thaws the tree (``--thaw``: a
  frozen process dies of SIGKILL only once thawed, with cgroup v1), kills it and exits.

Only the standard library, started with ``-I -S``: it must not import anything from a folder a
user controls, and it runs before any limit applies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def _children() -> list[int]:
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and fields[1].decode() == me:
            out.append(int(name))
    return out


def _kill_children() -> None:
    for pid in _children():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _write(path: str, value: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        print(f"keeper: cannot write {value} to {path}: {exc.strerror}", file=sys.stderr)
        return False
    return True


def main(argv: list[str]) -> int:
    procs: list[str] = []
    tree, thaw = None, None
    while len(argv) >= 2 and argv[0] in ("--cgroup", "--tree-cgroup", "--thaw"):
        if argv[0] == "--cgroup":
            procs.append(argv[1])
        elif argv[0] == "--tree-cgroup":
            tree = argv[1]
        else:
            thaw = argv[1]
        argv = argv[2:]
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("keeper: usage: keeper.py [--cgroup PROCS]... [--tree-cgroup PROCS --thaw STATE] -- COMMAND...", file=sys.stderr)
        return 125
    command = argv[1:]
    parent = os.getppid()
    for path in procs:
        if not _write(path, str(os.getpid())):
            return 125
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        return 125  # the grader died before the death signal was armed
    dying = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal dying
        dying = True
        if thaw:
            _write(thaw, "0" if thaw.endswith("cgroup.freeze") else "THAWED")
        _kill_children()

    signal.signal(signal.SIGTERM, on_term)
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"keeper: cannot start the worker: {exc.strerror}", file=sys.stderr)
        return 125
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if tree and not _write(tree, str(os.getpid())):
            os._exit(125)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"keeper: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(127)
    # Only the worker needs the grader's pipes; holding them here would hide the worker's death.
    os.closerange(3, 1 << 16)
    status: int | None = None
    while True:
        try:
            got, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if got == pid:
            status = wait_status
        if status is not None or dying:
            # Anything left outlives the worker: kill it, and whatever gets reparented here next.
            _kill_children()
    if status is None:
        return 125
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
