"""Tries to keep memory that no address-space limit sees and that could outlive the worker:
memfd_create, a file in /dev/shm, System V shared memory, a POSIX message queue."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "shared memory attempts"
# max-score: 0
import ctypes
import errno
import os

SIZE = 256 << 20


def _memfd():
    fd = os.memfd_create("hold")
    os.ftruncate(fd, SIZE)
    os.pwrite(fd, b"\x01" * (1 << 20), SIZE - (1 << 20))


def _dev_shm():
    with open("/dev/shm/grader-corpus-hold", "wb") as fh:
        for _ in range(SIZE >> 20):
            fh.write(b"\x01" * (1 << 20))


def _sysv():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.shmget(0, ctypes.c_size_t(SIZE), 0o1000 | 0o600) < 0:  # IPC_PRIVATE, IPC_CREAT
        raise OSError(ctypes.get_errno(), "shmget")


def _mqueue():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mq_open(b"/grader-corpus", os.O_CREAT | os.O_RDWR, 0o600, None) < 0:
        raise OSError(ctypes.get_errno(), "mq_open")


def expert_mlp(x, w1, w2):
    outcomes = []
    for name, attempt in (("memfd", _memfd), ("dev_shm", _dev_shm), ("sysv_shm", _sysv), ("mqueue", _mqueue)):
        try:
            attempt()
            outcomes.append(f"{name}=held")
        except OSError as exc:
            outcomes.append(f"{name}={errno.errorcode.get(exc.errno, exc.errno)}")
    raise RuntimeError(f"shared memory attempts: {' '.join(outcomes)}")
