"""Zeroes its inputs in place and returns zeros, hoping a later reference run sees zeros too.
Every call gets fresh copies and the reference runs on the grader's own: nothing to gain, and
the zeros are a wrong answer. (Whether inputs changed is not scored: only the submission's own
process could report it, and it can lie.)"""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed "differ from the reference"
# max-score: 0
import numpy as np


def expert_mlp(x, w1, w2):
    x[...] = 0
    w1[...] = 0
    return np.zeros((x.shape[0], w2.shape[1]))
