"""Grader-side code of lab-01: input generators and the claims checked as properties.

This file runs in the grader's process, never in the student's; students do not need it.
"""

from __future__ import annotations

import numpy as np

from grader.api import Tolerance, compare, digits_apart

# Top-k must not hinge on rounding: the k-th and (k+1)-th largest logits of every row are kept
# at least this far apart, so float32 and float64 arithmetic select the same experts.
MIN_GAP = 1e-3


def _separated_rows(rng: np.random.Generator, x: np.ndarray, w_gate: np.ndarray, k: int) -> np.ndarray:
    """Redraw rows of x until each row's top-k choice is clear of ties."""
    E = w_gate.shape[0]
    if k >= E:
        return x
    for _ in range(200):
        logits = x @ w_gate.T
        ordered = -np.sort(-logits, axis=1)
        close = np.flatnonzero(ordered[:, k - 1] - ordered[:, k] < MIN_GAP)
        if close.size == 0:
            return x
        x[close] = rng.standard_normal((close.size, x.shape[1]))
    raise RuntimeError("could not draw tie-free routing inputs")


def route_inputs(rng: np.random.Generator, T: int, D: int, E: int, k: int) -> dict:
    x = rng.standard_normal((T, D))
    w_gate = rng.standard_normal((E, D)) / np.sqrt(D)
    return {"x": _separated_rows(rng, x, w_gate, k), "w_gate": w_gate, "k": k}


def expert_mlp_inputs(rng: np.random.Generator, n: int, D: int, F: int) -> dict:
    return {
        "x": rng.standard_normal((n, D)),
        "w1": rng.standard_normal((D, F)) / np.sqrt(D),
        "w2": rng.standard_normal((F, D)) / np.sqrt(F),
    }


def permute_inputs(rng: np.random.Generator, T: int, E: int, k: int) -> dict:
    # Skewed expert popularity, so some experts get many assignments and some none.
    popularity = rng.dirichlet(np.full(E, 0.5))
    ids = np.empty((T, k), dtype=np.int64)
    for t in range(T):
        ids[t] = rng.choice(E, size=k, replace=False, p=popularity if k < E else None)
    return {"topk_ids": ids, "num_experts": E}


def forward_inputs(rng: np.random.Generator, T: int, D: int, F: int, E: int, k: int) -> dict:
    x = rng.standard_normal((T, D))
    w_gate = rng.standard_normal((E, D)) / np.sqrt(D)
    return {
        "x": _separated_rows(rng, x, w_gate, k),
        "w_gate": w_gate,
        "w1s": rng.standard_normal((E, D, F)) / np.sqrt(D),
        "w2s": rng.standard_normal((E, F, D)) / np.sqrt(F),
        "k": k,
    }


# Shapes the weight claim always tries (T, D, E, k): every k of at least 2, so weights that do
# not come from the logits (uniform ones, say) cannot match a softmax by accident; then k = E.
WEIGHT_SHAPES = [(1, 7, 5, 5), (33, 17, 9, 2), (100, 31, 13, 3), (4, 1, 2, 2)]
TOLERANCE = Tolerance(rtol=1e-4, atol=1e-5)


def _row(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.asarray(values, dtype=np.float64)) + "]"


def route_weights_are_softmax_of_chosen(probe, rng: np.random.Generator) -> str | None:
    """Whatever experts route picks, they are k distinct valid ids, and their weights are the
    softmax of exactly those experts' logits: non-negative, summing to 1, aligned with the ids.

    This does not ask which experts are picked (route-matches-reference does), but the weights
    must come from the logits of the picked ones: weights that ignore x and w_gate fail.
    """
    E = int(rng.integers(2, 33))
    drawn = (int(rng.integers(2, 200)), int(rng.integers(1, 40)), E, int(rng.integers(2, E + 1)))
    for T, D, E, k in [*WEIGHT_SHAPES, drawn]:
        inputs = route_inputs(rng, T, D, E, k)
        got = probe.submission("route", inputs, {"T": T, "D": D, "E": E, "k": k})
        ids, weights = np.asarray(got["topk_ids"]), np.asarray(got["topk_weights"], dtype=np.float64)
        where = f"x ({T}x{D}), {E} experts, k={k}"
        bad = np.argwhere((ids < 0) | (ids >= E))
        if bad.size:
            t, j = (int(i) for i in bad[0])
            return f"{where}: topk_ids[{t}, {j}] is {ids[t, j]}, outside 0..{E - 1}"
        ordered = np.sort(ids, axis=1)
        dup = np.flatnonzero(np.any(ordered[:, 1:] == ordered[:, :-1], axis=1))
        if dup.size:
            return f"{where}: token {int(dup[0])} picks an expert twice: {ids[dup[0]].tolist()}"
        sums = weights.sum(axis=1)
        off = np.flatnonzero(~(np.abs(sums - 1.0) <= 1e-5) | np.any(weights < 0, axis=1))
        if off.size:
            t = int(off[0])
            return f"{where}: token {t}'s weights {_row(weights[t])} sum to {sums[t]:.6g}; they must be non-negative and sum to 1"
        logits = inputs["x"] @ inputs["w_gate"].T
        chosen = np.take_along_axis(logits, ids.astype(np.int64), axis=1)
        softmax = np.exp(chosen - chosen.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        result = compare("topk_weights", softmax, weights, TOLERANCE)
        if not result.ok:
            t = int(np.argmax(np.abs(softmax - weights).max(axis=1)))
            return (
                f"{where}: token {t} picks experts {ids[t].tolist()} with weights {_row(weights[t])}, but the "
                f"softmax of those experts' logits {_row(chosen[t])} is {_row(softmax[t])}"
            )
    return None


def marker_experts(rng: np.random.Generator, T: int, E: int, k: int) -> tuple[dict, np.ndarray]:
    """Forward inputs whose expert e writes only to column e: expert_mlp(x, w1s[e], w2s[e]) is
    |x @ u| in column e and 0 elsewhere (w1 = [u, -u], so relu(x.u) + relu(-x.u) = |x.u|).

    The MoE output of token t is then |x_t . u| times its combine weights, each in the column of
    its expert: the output shows where every assignment went. Returns the inputs and |x @ u|.
    """
    D = E + int(rng.integers(1, 6))  # columns E.. belong to no expert and must stay 0
    inputs = forward_inputs(rng, T, D, 2, E, k)
    u = rng.standard_normal(D)
    u /= np.linalg.norm(u)
    inputs["w1s"] = np.repeat(np.stack([u, -u], axis=1)[None], E, axis=0)
    w2s = np.zeros((E, 2, D))
    w2s[np.arange(E), :, np.arange(E)] = 1.0
    inputs["w2s"] = w2s
    return inputs, np.abs(inputs["x"] @ u)


def grouped_keeps_every_assignment(probe, rng: np.random.Generator) -> str | None:
    """Every token receives each of its k weighted contributions exactly once, from the expert
    it picked: with marker experts (see marker_experts) the output row of token t holds its
    combine weights in its experts' columns, scaled by |x_t . u|, and nothing anywhere else.
    """
    T, E = int(rng.integers(20, 90)), int(rng.integers(3, 12))
    k = int(rng.integers(2, min(E, 4) + 1))
    inputs, scale = marker_experts(rng, T, E, k)
    D = inputs["x"].shape[1]
    got = np.asarray(probe.submission("moe_forward_grouped", inputs, {"T": T, "D": D})["out"], dtype=np.float64)
    route = probe.reference("route", {"x": inputs["x"], "w_gate": inputs["w_gate"], "k": k})
    ids, weights = route["topk_ids"], route["topk_weights"]
    shares = np.zeros((T, D))
    np.add.at(shares, (np.repeat(np.arange(T), k), ids.reshape(-1)), weights.reshape(-1))
    expected = scale[:, None] * shares
    result = compare("out", expected, got, TOLERANCE)
    if result.ok:
        return None
    t = int(np.argmax(np.abs(got - expected).max(axis=1)))
    seen = got[t] / max(scale[t], 1e-12)
    found = {int(c): round(float(seen[c]), 4) for c in np.flatnonzero(np.abs(seen) > 1e-6)}
    wanted = {int(e): round(float(w), 4) for e, w in zip(ids[t], weights[t])}
    total = sum(found.values())
    why = (
        f"they add up to {digits_apart(total, 1.0)}, not 1: a contribution was dropped or counted twice"
        if abs(total - 1.0) > 1e-4
        else "they add up to 1, but not on the experts the token picked"
    )
    return (
        f"{E} experts, each writing only to its own output column, k={k}, T={T}: token {t} should get "
        f"(expert: weight) {wanted}, but its output holds {found or 'nothing'}: {why}"
    )
