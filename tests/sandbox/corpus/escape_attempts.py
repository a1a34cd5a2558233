"""Tries the classic escapes: new namespaces, mounts, ptrace, privileged files. Every one is
refused (no capabilities, a non-root uid, seccomp), and the call errors listing them."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "escapes:"
# max-score: 0
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)


def attempt(name, fn):
    try:
        result = fn()
    except OSError as exc:
        return f"{name}={type(exc).__name__}"
    return f"{name}={'ok' if result == 0 else os.strerror(ctypes.get_errno())}"


def expert_mlp(x, w1, w2):
    outcomes = [
        attempt("unshare_user", lambda: libc.unshare(0x10000000)),
        attempt("unshare_mount", lambda: libc.unshare(0x00020000)),
        attempt("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        attempt("ptrace", lambda: libc.ptrace(16, 1, None, None)),
        attempt("setuid0", lambda: libc.setuid(0)),
        attempt("read_shadow", lambda: open("/etc/shadow").read() and 0),
        attempt("write_usr", lambda: open("/usr/pwned", "w") and 0),
    ]
    raise RuntimeError("escapes: " + ", ".join(outcomes) + f" as uid {os.getuid()}")
