"""Zeroes its inputs in place and returns zeros, hoping a later reference run sees zeros too.
Every call gets fresh copies and the reference runs on the grader's own: nothing to gain. The
change itself is reported (by the worker, for the student's sake) and costs the check."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "changed its argument 'w1' in place"
# max-score: 0
import numpy as np


def expert_mlp(x, w1, w2):
    x[...] = 0
    w1[...] = 0
    return np.zeros((x.shape[0], w2.shape[1]))
