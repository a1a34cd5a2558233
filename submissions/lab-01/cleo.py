"""lab-01: the MoE forward (routing + grouped experts).

Implement the five functions below; `grader submit starter.py` grades them. Read README.md
first. Arrays are numpy arrays; see each docstring for shapes.
"""

import numpy as np  # noqa: F401

EXERCISE = "lab-01-moe-routing"


def route(x, w_gate, k):
    """Route each token to its k experts.

    x (T, D), w_gate (E, D), k: int -> (topk_ids (T, k) int, topk_weights (T, k) float)

    logits = x @ w_gate.T; topk_ids holds the k largest logits of each row (any order
    within the row); topk_weights is the softmax over those k selected logits only,
    aligned with topk_ids.
    """
    raise NotImplementedError("route")


def expert_mlp(x, w1, w2):
    """One expert's MLP: x (n, D), w1 (D, F), w2 (F, D) -> relu(x @ w1) @ w2, shape (n, D)."""
    raise NotImplementedError("expert_mlp")


def permute(topk_ids, num_experts):
    """Group the T*k assignments by expert.

    topk_ids (T, k) int, num_experts: int -> (order (T*k,) int, offsets (E+1,) int)

    order is a permutation of the flat assignment indices 0..T*k-1 (index t*k + j) such that
    topk_ids.reshape(-1)[order] is non-decreasing; offsets[e]:offsets[e+1] is expert e's block,
    offsets[0] = 0 and offsets[E] = T*k.
    """
    raise NotImplementedError("permute")


def moe_forward_reference(x, w_gate, w1s, w2s, k):
    """The per-token loop (your oracle): w1s (E, D, F), w2s (E, F, D) -> out (T, D).

    out[t] = sum over j < k of topk_weights[t, j] * expert_mlp(x[t], w1s[e], w2s[e]), e = topk_ids[t, j].
    """
    raise NotImplementedError("moe_forward_reference")


def moe_forward_grouped(x, w_gate, w1s, w2s, k):
    """The same function, computed expert-major: route, permute, one expert_mlp call per
    expert on its whole block of tokens, then scatter back with the combine weights
    (a token's contributions accumulate; none may be dropped). Returns out (T, D)."""
    raise NotImplementedError("moe_forward_grouped")
