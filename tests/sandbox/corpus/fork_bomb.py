"""Forks without end: the process limit stops it, the call errors, the host stays responsive."""
# verdict: * error "defines no function"
# verdict: permute-bookkeeping error
# max-score: 0
import os


def permute(topk_ids, num_experts):
    children = 0
    while True:
        pid = os.fork()
        if pid == 0:
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
        children += 1
