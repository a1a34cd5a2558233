"""Holds memory in four processes at once, 400 MiB each (the corpus lab's budget is 1 GiB), and
answers correctly only if all four held theirs together. One budget for the whole process tree
(a memory cgroup, else few processes with a small address space each) must stop it."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error
# max-score: 0
import os
import select
import time

import numpy as np

BLOCK = 400 << 20


def _hold(w):
    try:
        block = bytearray(BLOCK)
        block[::4096] = b"\x01" * (BLOCK // 4096)  # touch every page: make it resident
        os.write(w, b"1")
        time.sleep(30)
    except BaseException:
        os.write(w, b"0")
    os._exit(0)


def expert_mlp(x, w1, w2):
    r, w = os.pipe()
    kids = []
    for _ in range(4):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            _hold(w)
        kids.append(pid)
    os.close(w)
    held, gone, deadline = 0, set(), time.monotonic() + 20
    while held + len(gone) < len(kids) and time.monotonic() < deadline:
        if select.select([r], [], [], 0.05)[0]:
            held += os.read(r, 16).count(b"1")
        for pid in kids:
            if pid not in gone and os.waitpid(pid, os.WNOHANG)[0]:
                gone.add(pid)  # it could not hold its block, or the out-of-memory killer took it
    for pid in kids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    if held == 4:
        return np.maximum(x @ w1, 0.0) @ w2
    raise MemoryError(f"held {held} of 4 blocks of 400 MiB at once")
