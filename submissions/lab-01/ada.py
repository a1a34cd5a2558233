"""A complete lab-01 submission (example)."""

import numpy as np

EXERCISE = "lab-01-moe-routing"


def route(x, w_gate, k):
    """Top-k experts of each token and the softmax of their k logits (aligned with the ids)."""
    logits = x @ w_gate.T
    topk_ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    selected = np.take_along_axis(logits, topk_ids, axis=1)
    weights = np.exp(selected - selected.max(axis=1, keepdims=True))
    return topk_ids, weights / weights.sum(axis=1, keepdims=True)


def expert_mlp(x, w1, w2):
    """One expert: relu(x @ w1) @ w2."""
    return np.maximum(x @ w1, 0.0) @ w2


def permute(topk_ids, num_experts):
    """Flat assignment indices sorted by expert, and each expert's [start, end) offsets."""
    flat = topk_ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=num_experts)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return order, offsets


def moe_forward_reference(x, w_gate, w1s, w2s, k):
    """The oracle: one token, one expert at a time."""
    topk_ids, topk_weights = route(x, w_gate, k)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = topk_ids[t, j]
            out[t] += topk_weights[t, j] * expert_mlp(x[t : t + 1], w1s[e], w2s[e])[0]
    return out


def moe_forward_grouped(x, w_gate, w1s, w2s, k):
    """Route, permute, one expert_mlp per expert over its block, scatter back with the weights."""
    topk_ids, topk_weights = route(x, w_gate, k)
    order, offsets = permute(topk_ids, w1s.shape[0])
    flat_weights = topk_weights.reshape(-1)
    out = np.zeros_like(x)
    for e in range(w1s.shape[0]):
        rows = order[offsets[e] : offsets[e + 1]]
        if rows.size == 0:
            continue
        tokens = rows // k
        y = expert_mlp(x[tokens], w1s[e], w2s[e])
        np.add.at(out, tokens, flat_weights[rows, None] * y)
    return out
