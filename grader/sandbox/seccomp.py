"""A seccomp-bpf deny-list for the worker, assembled here without libseccomp.

The filter allows everything except system calls a numpy/torch/triton submission never needs
and an escape would: tracing, mounting and the whole mount API (``statmount``, ``listmount``
and ``open_tree_attr`` included), namespaces, kernel modules, BPF, io_uring, keyrings; memory
that no address-space limit sees and that may outlive the worker (``memfd_create``, System V
shared memory, semaphores and message queues, POSIX message queues); and system calls newer
than this table (numbers from ``FIRST_UNKNOWN`` on answer ENOSYS, as on an older kernel: a
deny-list must not let the next kernel's calls through unread).

Sockets: ``socket`` is refused outright, in every tier, and ``socketpair`` makes only AF_UNIX
stream and seqpacket pairs. A socket that ``socket`` makes can ``connect`` (or ``sendto``) any
pathname UNIX socket the uid may write, and no filter can read the address it is given; a pair
is connected to itself from birth, and a stream or seqpacket socket ignores or refuses a
destination address (a datagram one would send to it, so datagram pairs are refused too). So no
IP, netlink, packet or vsock socket (a network namespace does not cover AF_VSOCK, which reaches
the host), and no host socket (D-Bus, ``/dev/log``, munge, ``docker.sock``), where no mount
namespace hides them. ``clone`` is allowed unless it asks for a new namespace; ``clone3``
answers ENOSYS so that glibc falls back to ``clone``, whose flags a filter can read.
docs/sandbox.md says which guarantee each part holds.
"""

from __future__ import annotations

import errno
import platform
import socket
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DENY_X86_64 = {
    "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "setns": 308,
    "unshare": 272, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250,
    "add_key": 248, "request_key": 249, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "process_vm_readv": 310,
    "process_vm_writev": 311, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_by_handle_at": 304, "name_to_handle_at": 303, "reboot": 169,
    "swapon": 167, "swapoff": 168, "acct": 163, "settimeofday": 164, "clock_settime": 227,
    "mknod": 133, "mknodat": 259, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "statmount": 457,
    "listmount": 458, "open_tree_attr": 467,
    "memfd_create": 319, "memfd_secret": 447,
    "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65, "semctl": 66,
    "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244,
    "mq_getsetattr": 245, "pidfd_getfd": 438, "kcmp": 312, "process_madvise": 440, "syslog": 103,
}
CLONE, CLONE3, SOCKET, SOCKETPAIR = 56, 435, 41, 53
FIRST_UNKNOWN = 470
"""The first x86_64 system call number after this table (``file_setattr``, 469, is Linux 6.17's)."""
CLONE_NEW_FLAGS = 0x10000000 | 0x20000000 | 0x40000000 | 0x00020000 | 0x04000000 | 0x08000000 | 0x02000000 | 0x00000080
ALLOWED_FAMILY = socket.AF_UNIX
ALLOWED_PAIRS = (socket.SOCK_STREAM, socket.SOCK_SEQPACKET)
SOCK_TYPE_MASK = 0xF
"""The type argument's low bits; SOCK_NONBLOCK and SOCK_CLOEXEC sit above them."""

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

# Classic BPF opcodes.
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
AND_K = 0x54
RET_K = 0x06

OFF_NR, OFF_ARCH, OFF_ARG0, OFF_ARG1 = 0, 4, 16, 24


def supported() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def build() -> bytes:
    """The filter program as the bytes of a ``struct sock_filter`` array."""
    if not supported():
        raise RuntimeError(f"no seccomp table for {platform.machine()}")
    eperm = RET_ERRNO | errno.EPERM
    enosys = RET_ERRNO | errno.ENOSYS
    prog: list[tuple[int, object, object, int]] = []  # (code, jt, jf, k); jt/jf are labels or 0

    def emit(code: int, k: int, jt: object = 0, jf: object = 0) -> None:
        prog.append((code, jt, jf, k))

    emit(LD_W_ABS, OFF_ARCH)
    emit(JEQ_K, AUDIT_ARCH_X86_64, 0, "deny")
    emit(LD_W_ABS, OFF_NR)
    emit(JGE_K, X32_SYSCALL_BIT, "deny", 0)
    emit(JGE_K, FIRST_UNKNOWN, "nosys", 0)
    for nr in sorted([*DENY_X86_64.values(), SOCKET]):
        emit(JEQ_K, nr, "deny", 0)
    emit(JEQ_K, CLONE3, "nosys", 0)
    emit(JEQ_K, CLONE, "clone", 0)
    emit(JEQ_K, SOCKETPAIR, "pair", 0)
    emit(RET_K, RET_ALLOW)
    labels = {"clone": len(prog)}
    emit(LD_W_ABS, OFF_ARG0)
    emit(JSET_K, CLONE_NEW_FLAGS, "deny", 0)
    emit(RET_K, RET_ALLOW)
    labels["pair"] = len(prog)
    emit(LD_W_ABS, OFF_ARG0)
    emit(JEQ_K, int(ALLOWED_FAMILY), 0, "deny")
    emit(LD_W_ABS, OFF_ARG1)
    emit(AND_K, SOCK_TYPE_MASK)
    for kind in ALLOWED_PAIRS:
        emit(JEQ_K, int(kind), "allow", 0)
    emit(RET_K, eperm)
    labels["allow"] = len(prog)
    emit(RET_K, RET_ALLOW)
    labels["deny"] = len(prog)
    emit(RET_K, eperm)
    labels["nosys"] = len(prog)
    emit(RET_K, enosys)

    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        offsets = []
        for target in (jt, jf):
            if isinstance(target, str):
                delta = labels[target] - i - 1
                if not 0 <= delta <= 255:
                    raise AssertionError("seccomp jump out of range")
                offsets.append(delta)
            else:
                offsets.append(int(target))  # type: ignore[call-overload]
        out += struct.pack("<HBBI", code, offsets[0], offsets[1], k & 0xFFFFFFFF)
    return bytes(out)
