"""Double-forks a setsid() daemon that keeps the worker's pipes open and sleeps. The grader
must not wait on it, and nothing of it may survive the grading."""
# verdict: * error "defines no function"
# verdict: route-matches-reference failed
# verdict: route-weights-are-a-distribution failed
# max-score: 0
import os
import time

import numpy as np


def route(x, w_gate, k):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(3600)
        os._exit(0)
    os.waitpid(pid, 0)  # the intermediate child; the daemon is reparented away
    return np.zeros((x.shape[0], k), dtype=np.int64), np.zeros((x.shape[0], k))
