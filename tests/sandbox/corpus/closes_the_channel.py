"""Closes the worker's answer pipe from inside a call and returns normally."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "during expert_mlp"
# max-score: 0
import os

import numpy as np


def expert_mlp(x, w1, w2):
    fd_out = int(open("/proc/self/cmdline", "rb").read().split(b"\0")[-2])
    os.close(fd_out)
    return np.zeros((x.shape[0], w2.shape[1]))
