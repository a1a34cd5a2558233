"""Accepted: ids come in ascending expert order within each row (weights moved with them),
and permute lists each expert's assignments in reverse. Both orders are free in the contract."""

import numpy as np

EXERCISE = "lab-01-moe-routing"


def route(x, w_gate, k):
    logits = x @ w_gate.T
    ids = np.argsort(-logits, axis=1)[:, :k]
    sel = np.take_along_axis(logits, ids, axis=1)
    w = np.exp(sel - sel.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    by_id = np.argsort(ids, axis=1)
    return np.take_along_axis(ids, by_id, axis=1), np.take_along_axis(w, by_id, axis=1)


def expert_mlp(x, w1, w2):
    return np.maximum(x @ w1, 0) @ w2


def permute(topk_ids, num_experts):
    flat = topk_ids.reshape(-1)
    n = flat.size
    # Sort by expert ascending, and by flat index descending within an expert.
    order = np.lexsort((-np.arange(n), flat))
    offsets = np.searchsorted(flat[order], np.arange(num_experts + 1), side="left")
    offsets[-1] = n
    return order, offsets


def moe_forward_reference(x, w_gate, w1s, w2s, k):
    ids, w = route(x, w_gate, k)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            out[t] += w[t, j] * expert_mlp(x[t : t + 1], w1s[ids[t, j]], w2s[ids[t, j]])[0]
    return out


def moe_forward_grouped(x, w_gate, w1s, w2s, k):
    ids, w = route(x, w_gate, k)
    order, offsets = permute(ids, w1s.shape[0])
    out = np.zeros_like(x)
    for e in range(w1s.shape[0]):
        rows = order[offsets[e] : offsets[e + 1]]
        np.add.at(out, rows // k, w.reshape(-1)[rows, None] * expert_mlp(x[rows // k], w1s[e], w2s[e]))
    return out
