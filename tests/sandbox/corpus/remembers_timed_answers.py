"""A grouped forward that paces itself at about three times the per-token loop's speed, where four
times is needed, and remembers every answer by its inputs' bytes. Each call times its own copy
of the per-token loop on a slice of the tokens and spins until the call has taken a quarter of
what the whole loop would (the grader, timing the loop in its own process, sees about three
times), so its speed sits between half the requirement and the margin whatever the machine's
load: the check measures more rounds. On the first round's inputs again, this file would answer
them from memory, in microseconds, and pass on the median of all pairs. Every round draws inputs
of its own, so memory buys nothing: it is measured for what it is."""
# verdict: * error "defines no function"
# verdict: grouped-matches-reference passed
# verdict: grouped-keeps-every-assignment passed
# verdict: grouped-is-faster failed|passed "faster"
# max-score: 3
import hashlib
import time

import numpy as np

_answers = {}
SLICE = 256
PACE = 4.0


def _grouped(x, w_gate, w1s, w2s, k):
    logits = x @ w_gate.T
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    sel = np.take_along_axis(logits, ids, axis=1)
    weights = np.exp(sel - sel.max(axis=1, keepdims=True))
    weights = (weights / weights.sum(axis=1, keepdims=True)).reshape(-1)
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=w1s.shape[0]))])
    out = np.zeros_like(x)
    for e in range(w1s.shape[0]):
        rows = order[offsets[e] : offsets[e + 1]]
        if rows.size:
            tokens = rows // k
            y = np.maximum(x[tokens] @ w1s[e], 0.0) @ w2s[e]
            np.add.at(out, tokens, weights[rows, None] * y)
    return out


def _per_token(x, w_gate, w1s, w2s, k):
    logits = x @ w_gate.T
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    sel = np.take_along_axis(logits, ids, axis=1)
    weights = np.exp(sel - sel.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = ids[t, j]
            out[t] += weights[t, j] * (np.maximum(x[t : t + 1] @ w1s[e], 0.0) @ w2s[e])[0]
    return out


def _pace(x, w_gate, w1s, w2s, k):
    """How long this call should take: the per-token loop's time over PACE, timed now on a slice."""
    n = min(len(x), SLICE)
    started = time.perf_counter()
    _per_token(x[:n], w_gate, w1s, w2s, k)
    return (time.perf_counter() - started) * len(x) / n / PACE


def moe_forward_grouped(x, w_gate, w1s, w2s, k):
    started = time.perf_counter()
    key = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in (x, w_gate, w1s, w2s)) + str(k).encode()).digest()
    if key not in _answers:
        pace = _pace(x, w_gate, w1s, w2s, k)
        _answers[key] = _grouped(x, w_gate, w1s, w2s, k)
        while time.perf_counter() - started < pace:
            pass
    return _answers[key].copy()
