"""Answers with an array far larger than asked for (64 MiB): parsed under a cap, then
rejected for its shape; the grader's memory is never at the submission's mercy."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed "shape"
# max-score: 0
import numpy as np


def expert_mlp(x, w1, w2):
    return np.zeros((4096, 2048))
