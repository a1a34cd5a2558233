"""A correct route that answers in big-endian byte order (and Fortran layout): a lossless
difference of layout, normalised by the loader, never punished."""
# verdict: * error "defines no function"
# verdict: route-matches-reference passed
# verdict: route-weights-are-a-distribution passed
# max-score: 3
import numpy as np


def route(x, w_gate, k):
    logits = x @ w_gate.T
    topk_ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    selected = np.take_along_axis(logits, topk_ids, axis=1)
    weights = np.exp(selected - selected.max(axis=1, keepdims=True))
    weights = weights / weights.sum(axis=1, keepdims=True)
    return np.asfortranarray(topk_ids.astype(">i8")), np.asfortranarray(weights.astype(">f8"))
