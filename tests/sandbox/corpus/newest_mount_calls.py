"""Calls the mount API's newest system calls, which a deny-list written before them lets
through: statmount and listmount (Linux 6.8: the mount table, every mount's options) and
open_tree_attr (6.15: a detached copy of a mount with new attributes), and a number past the
table (a call of the next kernel). Each must be refused before it reaches the kernel: EPERM for
the mount API, ENOSYS for the unknown call, whatever the arguments (these are invalid, so a
kernel that sees them answers EFAULT or EINVAL)."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "calls: statmount=EPERM listmount=EPERM open_tree_attr=EPERM next=ENOSYS"
# max-score: 0
import ctypes
import errno

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CALLS = (("statmount", 457), ("listmount", 458), ("open_tree_attr", 467), ("next", 470))


def expert_mlp(x, w1, w2):
    outcomes = []
    for name, nr in CALLS:
        ctypes.set_errno(0)
        result = libc.syscall(nr, 0, 0, 0, 0, 0)
        outcomes.append(f"{name}={'ok' if result >= 0 else errno.errorcode.get(ctypes.get_errno(), '?')}")
    raise RuntimeError("calls: " + " ".join(outcomes))
