"""A correct expert_mlp that also zeroes its w1 argument: right answers, and in a model the
expert's weights are gone after one call. Each call's inputs are fresh copies, so the grading
itself loses nothing; the worker reports the change and the function's checks are errors (a
forged report could hide it, and would gain only what a correct file has)."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "changed its argument 'w1' in place"
# max-score: 0
import numpy as np


def expert_mlp(x, w1, w2):
    y = np.maximum(x @ w1, 0.0) @ w2
    w1[...] = 0
    return y
