"""Run a command as the grader would run in a place courses use, emulated on a root machine.

    python environment.py docker  [--reachable PATH]... -- COMMAND...
    python environment.py nonroot [--reachable PATH]... [--user NAME] -- COMMAND...

``docker``: Docker's defaults. The capability set Docker grants (everything else leaves the
bounding set, dropped with ``capsh``, so CAP_SYS_ADMIN is gone); the namespace rules of Docker's
default seccomp profile (moby/profiles ``seccomp/default.json``: without CAP_SYS_ADMIN, ``unshare``,
``setns``, ``mount`` and the new mount API answer EPERM, ``clone`` with any CLONE_NEW* flag
EPERM, ``clone3`` ENOSYS; its AF_VSOCK and AF_ALG socket rule too), installed without
no_new_privs as runc does; the cgroup file system mounted read-only, as Docker mounts it.
Landlock stays allowed, as the profile has allowed it since 2022. /dev/shm is a 64 MiB tmpfs
(Docker's ``--shm-size`` default).

``nonroot``: an ordinary user (uid 65534, or ``--user NAME``, e.g. one made with ``useradd``; no
capabilities, no groups).

Both first make the interpreter and the repository reachable for other users (``--reachable``):
course images install Python under /usr or /opt, while a CI machine may keep it under root's
0700 home. Each folder on the way that others cannot search gets a 0755 tmpfs over it, with the
needed entries bound back. All of this happens in a private mount namespace; nothing on the
host changes. Needs root; only the standard library (plus ``capsh`` and ``setpriv``).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import stat
import struct
import sys
import tempfile
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
DOCKER_CAPS = {
    "cap_chown", "cap_dac_override", "cap_fsetid", "cap_fowner", "cap_mknod", "cap_net_raw", "cap_setgid",
    "cap_setuid", "cap_setfcap", "cap_setpcap", "cap_net_bind_service", "cap_sys_chroot", "cap_kill",
    "cap_audit_write",
}  # fmt: skip
NONROOT_UID = 65534

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        libc.mount(
            source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
            ctypes.c_ulong(flags), data.encode() if data else None,
        ),
        f"mount {target}",
    )  # fmt: skip


def private_namespace() -> None:
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def make_reachable(paths: list[str]) -> None:
    """Give every folder on the way to ``paths`` that others cannot search a 0755 tmpfs with the
    needed entries bound back from the original."""
    needed: dict[Path, set[str]] = {}
    for target in paths:
        path = Path(os.path.realpath(target))
        for folder in reversed(path.parents):
            child = path.parts[len(folder.parts)] if len(path.parts) > len(folder.parts) else None
            if child and not os.stat(folder).st_mode & stat.S_IXOTH:
                needed.setdefault(folder, set()).add(child)
    stage = tempfile.mkdtemp(prefix="emulate-stage-")
    for n, (folder, children) in enumerate(sorted(needed.items())):
        saved = os.path.join(stage, str(n))
        os.mkdir(saved)
        _mount(str(folder), saved, None, MS_BIND)
        _mount("tmpfs", str(folder), "tmpfs", 0, "mode=0755")
        for child in sorted(children):
            source, dest = os.path.join(saved, child), folder / child
            if os.path.isdir(source):
                dest.mkdir()
            else:
                dest.touch()
            _mount(source, str(dest), None, MS_BIND | MS_REC)
        _check(libc.umount2(saved.encode(), 2), f"umount {saved}")  # MNT_DETACH
    shutil.rmtree(stage, ignore_errors=True)


def cgroups_read_only() -> None:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2") or left.split()[4] == "/sys/fs/cgroup":
            points.append(left.split()[4])
    for point in points:
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def docker_seccomp() -> bytes:
    """The namespace rules of Docker's default profile (for a container without CAP_SYS_ADMIN)."""
    eperm, enosys, allow = 0x00050000 | 1, 0x00050000 | 38, 0x7FFF0000
    denied = [272, 308, 165, 166, 155, 428, 429, 430, 431, 432, 433, 442]  # unshare setns mount umount2 pivot_root, new mount API
    prog: list[tuple[int, int, int, int]] = []
    prog.append((0x20, 0, 0, 4))  # A = arch
    prog.append((0x15, 1, 0, 0xC000003E))  # x86_64?
    prog.append((0x06, 0, 0, allow))  # another arch: not emulated
    prog.append((0x20, 0, 0, 0))  # A = nr
    for nr in denied:
        prog.append((0x15, 0, 1, nr))
        prog.append((0x06, 0, 0, eperm))
    prog.append((0x15, 0, 1, 435))  # clone3
    prog.append((0x06, 0, 0, enosys))
    prog.append((0x15, 0, 4, 56))  # clone: flags & CLONE_NEW* (0x7E020000)
    prog.append((0x20, 0, 0, 16))
    prog.append((0x45, 0, 1, 0x7E020000))
    prog.append((0x06, 0, 0, eperm))
    prog.append((0x06, 0, 0, allow))
    prog.append((0x15, 0, 4, 41))  # socket: AF_ALG (38) and AF_VSOCK (40)
    prog.append((0x20, 0, 0, 16))
    prog.append((0x15, 1, 0, 38))
    prog.append((0x15, 0, 1, 40))
    prog.append((0x06, 0, 0, eperm))
    prog.append((0x06, 0, 0, allow))
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def install_seccomp(program: bytes) -> None:
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = Fprog(len(program) // 8, program)
    _check(libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "PR_SET_SECCOMP")  # as root: no no_new_privs needed


def all_caps() -> list[str]:
    import subprocess

    out = subprocess.run(["capsh", "--print"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("Bounding set ="))
    return line.split("=", 1)[1].strip().split(",")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("docker", "nonroot") or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    mode, rest = argv[0], argv[1:]
    split = rest.index("--")
    options, command = rest[:split], rest[split + 1 :]
    reachable = [options[i + 1] for i, o in enumerate(options) if o == "--reachable"]
    users = [options[i + 1] for i, o in enumerate(options) if o == "--user"]
    uid = pwd.getpwnam(users[-1]).pw_uid if users else NONROOT_UID
    if os.geteuid() != 0:
        print("environment.py: needs root", file=sys.stderr)
        return 2
    private_namespace()
    make_reachable(reachable)
    if mode == "docker":
        _mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")  # --shm-size 64m
        cgroups_read_only()
        install_seccomp(docker_seccomp())
        drop = ",".join(c for c in all_caps() if c not in DOCKER_CAPS)
        capsh = shutil.which("capsh") or "/usr/sbin/capsh"
        os.execv(capsh, [capsh, f"--drop={drop}", "--", "-c", 'exec "$@"', "emulate-docker", *command])
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    os.execv(setpriv, [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command])
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
