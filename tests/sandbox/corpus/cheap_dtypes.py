"""Answers in the wrong kinds of number: float ids, boolean or complex outputs."""
# verdict: * error "defines no function"
# verdict: route-matches-reference failed "dtype"
# verdict: route-weights-are-a-distribution failed "dtype"
# verdict: expert-mlp-matches-reference failed
# max-score: 0
import numpy as np


def route(x, w_gate, k):
    logits = x @ w_gate.T
    ids = np.argsort(-logits, axis=1)[:, :k]
    return ids.astype(np.float64), np.full(ids.shape, 1.0 / k)


def expert_mlp(x, w1, w2):
    return (np.maximum(x @ w1, 0) @ w2).astype(np.complex128)
