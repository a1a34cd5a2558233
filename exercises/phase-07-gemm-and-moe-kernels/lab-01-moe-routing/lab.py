"""Grader-side code of lab-01: input generators and the claims checked as properties.

This file runs in the grader's process, never in the student's; students do not need it.
"""

from __future__ import annotations

import numpy as np

from grader.checkers.compare import compare
from grader.manifest import Tolerance

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


def identical_experts_collapse(probe, rng: np.random.Generator) -> str | None:
    """With every expert the same MLP, the MoE output is that MLP's output on x.

    The combine weights of a token sum to 1, so summing its k weighted (identical)
    contributions gives back one contribution. A forward that drops repeated rows in the
    scatter, or whose weights do not sum to 1, returns something else.
    """
    T, D, F = int(rng.integers(20, 90)), int(rng.integers(3, 24)), int(rng.integers(3, 40))
    E = int(rng.integers(3, 12))
    k = int(rng.integers(2, min(E, 4) + 1))
    inputs = forward_inputs(rng, T, D, F, E, k)
    w1, w2 = inputs["w1s"][0], inputs["w2s"][0]
    inputs["w1s"] = np.repeat(w1[None], E, axis=0)
    inputs["w2s"] = np.repeat(w2[None], E, axis=0)
    got = probe.submission("moe_forward_grouped", inputs, {"T": T, "D": D})["out"]
    expected = np.maximum(inputs["x"] @ w1, 0) @ w2
    result = compare("out", expected, got, Tolerance(rtol=1e-4, atol=1e-5))
    if result.ok:
        return None
    scale = float(np.linalg.norm(got) / max(np.linalg.norm(expected), 1e-12))
    return (
        f"all {E} experts identical, k={k}, T={T}: the output should equal one expert's output, "
        f"but its norm is {scale:.2f}x that ({result.message})"
    )
