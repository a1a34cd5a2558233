"""Leaks 64 MiB at a time until the address-space limit says no: a memory error, not a
grader crash."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "MemoryError"
# max-score: 0
import numpy as np

HOARD = []


def expert_mlp(x, w1, w2):
    while True:
        HOARD.append(np.empty(8 << 20))
