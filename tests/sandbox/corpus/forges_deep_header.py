"""Answers route with a forged header nested 30,000 levels deep (json.loads would exhaust the
stack): the grader refuses it by its depth before parsing; only route's checks lose, and the
grading stays gradable."""
# verdict: * error "defines no function"
# verdict: route-matches-reference error "invalid answer"
# verdict: route-weights-are-a-distribution error
# verdict: expert-mlp-matches-reference passed
# max-score: 1
import os

import numpy as np

fd_out = int(open("/proc/self/cmdline", "rb").read().split(b"\0")[-2])


def route(x, w_gate, k):
    header = b"[" * 30000 + b"]" * 30000
    os.write(fd_out, len(header).to_bytes(8, "little") + header)
    return None


def expert_mlp(x, w1, w2):
    return np.maximum(x @ w1, 0.0) @ w2
