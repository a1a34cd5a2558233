"""Returns a generator (lazy output) and an object array carrying a pickle payload."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed "should be a numpy array"
# verdict: route-matches-reference failed
# verdict: route-weights-are-a-distribution failed
# max-score: 0
import os

import numpy as np


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/grader-was-unpickled",))


def expert_mlp(x, w1, w2):
    return (row for row in np.zeros((x.shape[0], w2.shape[1])))


def route(x, w_gate, k):
    return np.array([[Payload()] * k] * x.shape[0], dtype=object), np.full((x.shape[0], k), 1.0 / k)
