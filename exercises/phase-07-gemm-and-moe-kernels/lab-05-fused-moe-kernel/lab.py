"""Grader-side code of lab-05: inputs for the CPU interpreter and the GPU, the oracle, the work of a call.

Runs in the grader's process, never in the student's. CPU cases are small numpy inputs (float32
or float16) that the worker hands to the submission as CPU torch tensors, run by Triton's
interpreter. GPU cases are recipes: gigabytes of bf16 expert weights that the grader and the
worker each build from the same seed on the device, instead of sending them through a pipe.
"""

from __future__ import annotations

import math

import numpy as np

from grader.api import recipes

# model index -> (name, E, k, H, I); 2 is a small awkward shape: H = 200 and I = 104 leave a
# ragged last tile at every tile width from 16 to 256 (8 past a multiple of 16, 32 and 64).
MODELS = {
    0: ("mixtral", 8, 2, 4096, 14336),
    1: ("deepseek_v3", 256, 8, 7168, 2048),
    2: ("awkward", 6, 3, 200, 104),
}

ALIGN_BLOCKS = (16, 32, 64, 128, 256)
"""The block sizes moe_align_block_size must support (the handout says so): the tile heights a
tl.dot GEMM can use. The align checks draw exactly these."""


def _routing(rng: np.random.Generator, T: int, E: int, k: int, skew: float) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.standard_normal((T, E)) + skew * np.linspace(2, 0, E)
    ids = np.argsort(-logits, axis=1)[:, :k]
    chosen = np.take_along_axis(logits, ids, axis=1)
    w = np.exp(chosen - chosen.max(axis=1, keepdims=True))
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32), ids


def cpu_inputs(rng: np.random.Generator, T: int, H: int, I: int, E: int, k: int, half: int = 0, ids64: int = 0) -> dict:
    dtype = np.float16 if half else np.float32
    weights, ids = _routing(rng, T, E, k, skew=float(rng.uniform(0, 2)))
    return {
        "x": rng.standard_normal((T, H)).astype(dtype),
        "w1": (rng.standard_normal((E, 2 * I, H)) / math.sqrt(H)).astype(dtype),
        "w2": (rng.standard_normal((E, H, I)) / math.sqrt(I)).astype(dtype),
        "topk_weights": weights,
        "topk_ids": ids.astype(np.int64 if ids64 else np.int32),
    }


def align_inputs(rng: np.random.Generator, T: int, E: int, k: int, block_log2: int, ids64: int = 0) -> tuple[dict, dict]:
    """Routing for the align check, with block_m = 2**block_log2 (one of ALIGN_BLOCKS; the case names it)."""
    block = 2**block_log2
    if block not in ALIGN_BLOCKS:
        raise ValueError(f"block_m {block} is not one the handout promises ({ALIGN_BLOCKS})")
    _, ids = _routing(rng, T, E, k, skew=float(rng.uniform(0, 3)))
    return {"topk_ids": ids.astype(np.int64 if ids64 else np.int32), "num_experts": E, "block_m": block}, {"block_m": block}


def gpu_inputs(rng: np.random.Generator, model: int, T: int) -> tuple[dict, dict]:
    """One graded shape, and its sizes. Weights depend only on the model (built once per process
    and cached); activations and routing come from the grading seed."""
    _, E, k, H, I = MODELS[model]
    w_seed = 7000 + 10 * model
    seed = int(rng.integers(1 << 30))
    weights, ids = recipes.routing(T, E, k, seed + 1)
    return {
        "x": recipes.randn((T, H), "bfloat16", seed),
        "w1": recipes.randn((E, 2 * I, H), "bfloat16", w_seed, scale=H**-0.5, cache=True),
        "w2": recipes.randn((E, H, I), "bfloat16", w_seed + 1, scale=I**-0.5, cache=True),
        "topk_weights": weights,
        "topk_ids": ids,
    }, {"H": H, "I": I, "E": E, "k": k}


def fresh_activations(rng: np.random.Generator, inputs: dict) -> dict:
    """The same weights, new tokens and routing: what every timed call gets."""
    x = inputs["x"].spec
    ids = inputs["topk_ids"].spec
    seed = int(rng.integers(1 << 30))
    weights, new_ids = recipes.routing(ids["tokens"], ids["experts"], ids["k"], seed + 1)
    return dict(inputs, x=recipes.randn(tuple(x["shape"]), x["dtype"], seed), topk_weights=weights, topk_ids=new_ids)


def work(inputs: dict) -> tuple[float, float, str]:
    """The least work of one call, for the roofline: (FLOPs, bytes, dtype of the matrix math).
    FLOPs = 6 T k H I (two GEMMs, gate and up counted apart); bytes = the weights of every expert
    the routing touches (3 H I elements each, read once) + x read + out written."""
    import torch

    ids = inputs["topk_ids"].materialize("cuda")
    T, k = ids.shape
    _, two_i, H = inputs["w1"].spec["shape"]
    inter = two_i // 2
    dtype = inputs["x"].dtype
    size = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    touched = int(torch.unique(ids).numel())
    flops = 6.0 * T * k * H * inter
    nbytes = touched * 3.0 * H * inter * size + 2.0 * T * H * size
    return flops, nbytes, dtype


def moe_reference(x, w1, w2, topk_weights, topk_ids):
    """The oracle: one expert at a time in float64 on the CPU (float32 on the GPU), never the
    whole weight tensor widened at once. Returns float32."""
    import torch
    import torch.nn.functional as F

    wide = torch.float64 if x.device.type == "cpu" else torch.float32
    inter = w2.shape[2]
    out = torch.zeros(x.shape, dtype=wide, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        gate_up = x[tok].to(wide) @ w1[e].to(wide).T
        h = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        out.index_add_(0, tok, (h @ w2[e].to(wide).T) * topk_weights[tok, slot, None].to(wide))
    return out.float()
