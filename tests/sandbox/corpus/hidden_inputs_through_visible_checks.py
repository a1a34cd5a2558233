"""Remembers the inputs of every call of route, whose checks are hidden (as on Gradescope or
PrairieLearn), and puts them in the exception of a later visible check: with one worker serving
every check in manifest order, a student would read the hidden cases off the visible check's
message. Hidden checks run last, in a fresh worker: the visible ones run in a worker that never
saw a hidden input. The speed check is hidden too: its number stays off Gradescope's public
leaderboard, and its timing does not matter here."""
# hidden: route-matches-reference route-weights-are-a-distribution grouped-is-faster
# verdict: * error "defines no function"
# verdict: route-matches-reference passed
# verdict: route-weights-are-a-distribution passed
# verdict: expert-mlp-matches-reference error "route saw: []"
# verdict: grouped-matches-reference passed
# verdict: grouped-keeps-every-assignment passed
# verdict: grouped-is-faster passed|failed
# max-score: 6.5
import numpy as np

_seen = []


def _route(x, w_gate, k):
    logits = x @ w_gate.T
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    sel = np.take_along_axis(logits, ids, axis=1)
    weights = np.exp(sel - sel.max(axis=1, keepdims=True))
    return ids, weights / weights.sum(axis=1, keepdims=True)


def route(x, w_gate, k):
    _seen.append(f"x{list(x.shape)}:{float(np.asarray(x).ravel()[:1].sum()):.6g}:k={k}")
    return _route(x, w_gate, k)


def expert_mlp(x, w1, w2):
    raise RuntimeError(f"route saw: {_seen}")


def moe_forward_grouped(x, w_gate, w1s, w2s, k):
    ids, weights = _route(x, w_gate, k)
    flat, weights = ids.reshape(-1), weights.reshape(-1)
    order = np.argsort(flat, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=w1s.shape[0]))])
    out = np.zeros_like(x)
    for e in range(w1s.shape[0]):
        rows = order[offsets[e] : offsets[e + 1]]
        if rows.size:
            tokens = rows // k
            np.add.at(out, tokens, weights[rows, None] * (np.maximum(x[tokens] @ w1s[e], 0.0) @ w2s[e]))
    return out
