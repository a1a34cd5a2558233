"""Grader-side code of lab-06: the FP8 format, its inputs, the oracles, the claims.

Runs in the grader's process, never in the student's. The format (DeepSeek-V3's): e4m3 weights
with one float32 scale per 128x128 block, dequantised weight = e4m3 value * the scale of its
block; activations quantised per token in groups of 128 values, scale = max(amax, 1e-4) / 448,
value = x / scale rounded to nearest even (torch's cast, and the GPU's cvt.rn.satfinite).

CPU cases are small tensors the worker hands to the submission (Triton's interpreter runs its
kernels); the weights are quantised here from float32 originals, which the end-to-end oracle
keeps. GPU cases are recipes the grader and the worker each build from the same seed.
"""

from __future__ import annotations

import numpy as np

from grader.api import SubmissionFault, recipes

GROUP = 128
FP8_MAX = 448.0
AMAX_MIN = 1e-4

# model index -> (name, E, k, H, I). "awkward": H = 328 leaves a 72-deep last K block in GEMM 1 and
# I = 200 one in GEMM 2, and with 2I = 400 gate and up rows share the scale block 128..255 (the up
# rows' scale blocks start at (I + n) // 128, not I // 128 + n // 128). "precision": large K,
# positive data and one scale per expert, so only the accumulator's precision separates kernels.
MODELS = {
    0: ("deepseek_v3", 256, 8, 7168, 2048),
    1: ("awkward", 6, 3, 328, 200),
    2: ("precision", 8, 2, 7168, 2048),
}


# --- the format ---------------------------------------------------------------------------------


def quantize_groups(x):
    """(e4m3 values, float32 scales (M, ceil(K/128))) of x (M, K), per row and group of 128, in
    float32 arithmetic as the kernels do it."""
    import torch

    M, K = x.shape
    G = -(-K // GROUP)
    padded = torch.zeros((M, G * GROUP), dtype=torch.float32, device=x.device)
    padded[:, :K] = x.float()
    groups = padded.view(M, G, GROUP)
    scales = groups.abs().amax(dim=2).clamp(min=AMAX_MIN) / FP8_MAX
    q = (groups / scales[:, :, None]).clamp(-FP8_MAX, FP8_MAX).view(M, G * GROUP)[:, :K]
    return q.to(torch.float8_e4m3fn), scales


def dequantize_groups(q, scales, dtype):
    return q.to(dtype) * scales.to(dtype).repeat_interleave(GROUP, dim=1)[:, : q.shape[1]]


def dequantize_blocks(w, scales, dtype):
    """One expert's (N, K) e4m3 weights times the scale of each 128x128 block."""
    n, k = w.shape
    full = scales.to(dtype).repeat_interleave(GROUP, dim=0)[:n].repeat_interleave(GROUP, dim=1)[:, :k]
    return w.to(dtype) * full


def quant_reference(x):
    """The oracle of per_token_group_quant_fp8."""
    return quantize_groups(x)


def _layer(x, w1_of, w2_of, inter, topk_weights, topk_ids, requantize):
    """The MoE layer, one expert at a time: x (T, H) already widened; w1_of(e), w2_of(e) the
    expert's widened weights; with ``requantize`` the SwiGLU output is quantised per row and
    group of 128 (in float32) before GEMM 2, as the kernels do."""
    import torch
    import torch.nn.functional as F

    out = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        gate_up = x[tok] @ w1_of(e).T
        h = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        if requantize:
            h = dequantize_groups(*quantize_groups(h.float()), x.dtype)
        out.index_add_(0, tok, (h @ w2_of(e).T) * topk_weights[tok, slot, None].to(x.dtype))
    return out.float()


def moe_dequant_reference(x, w1, w1_scale, w2, w2_scale, topk_weights, topk_ids):
    """Oracle (i): the same e4m3 tensors and scales, dequantised, in float64 on the CPU (float32
    on the GPU), x and the SwiGLU output quantised exactly as specified. Returns float32."""
    import torch

    wide = torch.float64 if x.device.type == "cpu" else torch.float32
    xd = dequantize_groups(*quantize_groups(x), wide)

    def w1_of(e):
        return dequantize_blocks(w1[e], w1_scale[e], wide)

    def w2_of(e):
        return dequantize_blocks(w2[e], w2_scale[e], wide)

    return _layer(xd, w1_of, w2_of, w2.shape[2], topk_weights, topk_ids, requantize=True)


def moe_unquantised_reference(x, w1_full, w2_full, topk_weights, topk_ids):
    """Oracle (ii): the layer on the weights before quantisation and x as given, float64, nothing
    quantised. The distance to it bounds the quantisation noise."""
    import torch

    wide = torch.float64 if x.device.type == "cpu" else torch.float32
    return _layer(
        x.to(wide), lambda e: w1_full[e].to(wide), lambda e: w2_full[e].to(wide), w2_full.shape[2], topk_weights, topk_ids, False
    )


# --- inputs -------------------------------------------------------------------------------------


def _routing(rng: np.random.Generator, T: int, E: int, k: int, skew: float) -> tuple[np.ndarray, np.ndarray]:
    """k distinct experts per token, the low ones favoured by ``skew`` (so that some high ones go
    without tokens), and combine weights that sum to 1."""
    favour = np.exp(skew * np.linspace(1.0, -1.0, E))
    ids = np.stack([rng.choice(E, size=k, replace=False, p=favour / favour.sum()) for _ in range(T)])
    return rng.dirichlet(np.ones(k), size=T).astype(np.float32), ids


def _poisoned_view(t, pad: tuple[int, ...], transpose: bool = False):
    """``t`` as a non-contiguous view: of a larger buffer whose other entries are NaN (``pad``
    extra entries per dim), or with its last two dims stored transposed."""
    import torch

    if transpose:
        storage = torch.empty(t.shape[:-2] + (t.shape[-1], t.shape[-2]), dtype=t.dtype).transpose(-1, -2)
        storage.copy_(t)
        return storage
    big = torch.full(tuple(n + p for n, p in zip(t.shape, pad)), float("nan"), dtype=t.dtype)
    view = big[tuple(slice(0, n) for n in t.shape)]
    view.copy_(t)
    return view


def cpu_inputs(
    rng: np.random.Generator, T: int, H: int, I: int, E: int, k: int, ids64: int = 0, strided: int = 0, bf16: int = 0
) -> dict:
    """x, e4m3 weights with block scales (each block's values times 2**u, u in [-3, 3]), routing,
    and the float32 weights they were quantised from (w1_full, w2_full: for oracle (ii) only).
    ``strided``: x is a view with NaN between its rows and in the row after its last (the row a
    padding slot T*k // k points at), w1_scale is stored transposed and w2_scale is a view with NaN
    columns after it: a kernel must use the strides it is given, and reads nothing it should not."""
    import torch

    seed = int(rng.integers(1 << 30))
    weights, ids = _routing(rng, T, E, k, skew=float(rng.uniform(0, 3)))
    parts = {}
    for offset, (name, shape) in enumerate((("w1", (E, 2 * I, H)), ("w2", (E, H, I)))):
        for part in ("weight", "scale", "original"):
            spec = recipes.block_fp8(shape, seed + offset, part, scale=shape[2] ** -0.5, spread=3.0)
            parts[name, part] = spec.materialize("cpu")
    x = torch.from_numpy(rng.standard_normal((T, H)).astype(np.float32))
    if bf16:
        x = x.to(torch.bfloat16)
    w1_scale, w2_scale = parts["w1", "scale"], parts["w2", "scale"]
    if strided:
        x = _poisoned_view(x, (1, 24))
        w1_scale = _poisoned_view(w1_scale, (), transpose=True)
        w2_scale = _poisoned_view(w2_scale, (0, 0, 3))
    return {
        "x": x,
        "w1": parts["w1", "weight"],
        "w1_scale": w1_scale,
        "w2": parts["w2", "weight"],
        "w2_scale": w2_scale,
        "topk_weights": weights,
        "topk_ids": ids.astype(np.int64 if ids64 else np.int32),
        "w1_full": parts["w1", "original"],
        "w2_full": parts["w2", "original"],
    }


def quant_inputs(rng: np.random.Generator, M: int, K: int, bf16: int = 0) -> dict:
    """Activations of varied magnitude per row (2**u, u in [-6, 6])."""
    import torch

    x = rng.standard_normal((M, K)) * np.exp2(rng.uniform(-6, 6, (M, 1)))
    t = torch.from_numpy(x.astype(np.float32))
    return {"x": t.to(torch.bfloat16) if bf16 else t}


def gpu_inputs(rng: np.random.Generator, model: int, T: int) -> tuple[dict, dict]:
    """A GPU shape as recipes the grader and the worker each build on the device, and its sizes.
    The e4m3 weights and their scales follow from the model alone (cached per process); x and the
    routing from the grading seed."""
    name, E, k, H, I = MODELS[model]
    seed = int(rng.integers(1 << 30))
    weights, ids = recipes.routing(T, E, k, seed + 1)
    w_seed = 8000 + 10 * model
    precise = name == "precision"
    style = {"spread": 0.0 if precise else 2.0, "uniform": precise, "positive": precise, "dtype": "bfloat16", "cache": True}
    if precise:  # positive, and every group's amax 1.0: one activation scale everywhere
        x = recipes.rand((T, H), "bfloat16", seed, 0.5, 1.0, group=GROUP)
    else:
        x = recipes.randn((T, H), "bfloat16", seed)
    inputs = {"x": x, "topk_weights": weights, "topk_ids": ids}
    for offset, (arg, shape) in enumerate((("w1", (E, 2 * I, H)), ("w2", (E, H, I)))):
        inputs[arg] = recipes.block_fp8(shape, w_seed + offset, "weight", scale=shape[2] ** -0.5, **style)
        inputs[arg + "_scale"] = recipes.block_fp8(shape, w_seed + offset, "scale", scale=shape[2] ** -0.5, **style)
    return inputs, {"H": H, "I": I, "E": E, "k": k}


def fresh_activations(rng: np.random.Generator, inputs: dict) -> dict:
    """The same weights, new tokens and routing: what every timed call gets."""
    x = inputs["x"]
    ids = inputs["topk_ids"].spec
    seed = int(rng.integers(1 << 30))
    weights, new_ids = recipes.routing(ids["tokens"], ids["experts"], ids["k"], seed + 1)
    return dict(inputs, x=type(x)({**x.spec, "seed": seed}), topk_weights=weights, topk_ids=new_ids)


def work(inputs: dict) -> tuple[float, float, str]:
    """The least work of one call, for the roofline: (FLOPs, bytes, dtype of the matrix math).
    FLOPs = 6 T k H I; bytes = the e4m3 weights and float32 block scales of every expert the
    routing touches (read once) + x read and out written in bf16."""
    import torch

    ids = inputs["topk_ids"].materialize("cuda")
    T, k = ids.shape
    _, two_i, H = inputs["w1"].spec["shape"]
    inter = two_i // 2
    touched = int(torch.unique(ids).numel())
    blocks = -(-two_i // GROUP) * -(-H // GROUP) + -(-H // GROUP) * -(-inter // GROUP)
    flops = 6.0 * T * k * H * inter
    nbytes = touched * (3.0 * H * inter + 4.0 * blocks) + 2 * 2.0 * T * H
    return flops, nbytes, "float8_e4m3fn"


# --- claims: the quantisation kernel --------------------------------------------------------------

EDGE_KINDS = ("zero_group", "above_448", "tiny", "ties")


def _edge_input(rng: np.random.Generator, kind: str, M: int, K: int) -> np.ndarray:
    x = rng.standard_normal((M, K))
    if kind == "zero_group":  # one row's middle group, and the whole last row, all zeros
        x[0, GROUP : 2 * GROUP] = 0.0
        x[-1] = 0.0
    elif kind == "above_448":  # spikes of 1e3 to 3e4 (activation outliers), far beyond e4m3's 448
        spikes = rng.integers(0, K, size=(M, 2))
        for row, cols in enumerate(spikes):
            x[row, cols] = rng.choice([-1, 1], 2) * rng.uniform(1e3, 3e4, 2)
    elif kind == "tiny":  # amax under the 1e-4 clamp: the scale is 1e-4 / 448, values fall to subnormals
        x *= 1e-6
    elif kind == "ties":  # amax 448 makes the scale 1.0: exact midpoints between e4m3 values must round to even
        codes = rng.integers(8, 120, size=(M, K))
        lo = _E4M3[codes]
        x = np.where(rng.random((M, K)) < 0.5, -1, 1) * (lo + _E4M3[codes + 1]) / 2
        x[:, ::GROUP] = 448.0
    return x


def _e4m3_table() -> np.ndarray:
    import torch

    return torch.arange(128, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy().astype(np.float64)


_E4M3 = _e4m3_table()  # the non-negative e4m3 values by code (127 is NaN)


def _codes(values: np.ndarray) -> np.ndarray:
    """Signed position of each e4m3 value on the e4m3 number line (adjacent values differ by 1)."""
    return np.sign(values) * np.searchsorted(_E4M3[:127], np.abs(values))


def quant_problem(x, q: np.ndarray, s: np.ndarray) -> str | None:
    """None when (q, s) is x quantised as specified, else what differs (NaN never reaches here: the
    grader refuses it as an answer). A scale may be 1 ulp off (dividing amax by 448, or multiplying
    by a rounded 1/448). A value may be the other e4m3 neighbour of x / scale only where x / scale
    lies within 2**-21 of the midpoint between the two, midpoint included: a division and a
    multiply by the reciprocal can land on either side of it. Where the scale is a power of two
    both are exact, and an exact midpoint must round to even, as torch and the GPU round."""
    q_ref, s_ref = quantize_groups(x)
    s_ref = s_ref.numpy()
    q_ref = q_ref.float().numpy()
    off = np.abs(s.astype(np.float64) - s_ref) > np.spacing(s_ref.astype(np.float32))
    if off.any():
        r, g = np.argwhere(off)[0]
        return (
            f"{int(off.sum())} of {s.size} scales differ from max(amax, {AMAX_MIN:g}) / 448 by more than 1 ulp; first "
            f"scale[{r}, {g}]: expected {s_ref[r, g]:.9g}, got {s[r, g]:.9g}"
        )
    exact = x.float().numpy().astype(np.float64) / np.repeat(s_ref.astype(np.float64), GROUP, axis=1)[:, : x.shape[1]]
    distance = np.abs(_codes(q) - _codes(q_ref))
    lo = _E4M3[np.clip(np.searchsorted(_E4M3[:127], np.abs(exact), side="right") - 1, 0, 125)]
    hi = _E4M3[np.clip(np.searchsorted(_E4M3[:127], np.abs(exact), side="right"), 1, 126)]
    near = np.abs(np.abs(exact) - (lo + hi) / 2)
    mantissa, _ = np.frexp(np.repeat(s_ref.astype(np.float64), GROUP, axis=1)[:, : x.shape[1]])
    ambiguous = (near <= 2.0**-21 * np.abs(exact)) & ((near > 0) | (mantissa != 0.5))
    bad = (distance > 1) | ((distance == 1) & ~ambiguous)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        return (
            f"{int(bad.sum())} of {q.size} values are not x / scale rounded to the nearest e4m3 value (ties to even); "
            f"first value[{r}, {c}]: x = {float(x[r, c]):.9g}, x / scale = {exact[r, c]:.9g}, expected {q_ref[r, c]:g}, "
            f"got {q[r, c]:g}"
        )
    return None


def quantisation_matches(probe, rng: np.random.Generator, shapes: list, edge: bool = False, random: int = 0) -> str | None:
    """per_token_group_quant_fp8 quantises as specified on each of ``shapes`` ([M, K, bf16]
    triples; with ``edge`` each is also one of EDGE_KINDS, in turn) and on ``random`` more
    shapes drawn here."""
    import torch

    drawn = [[int(rng.integers(1, 24)), int(rng.integers(1, 700)), int(rng.integers(0, 2))] for _ in range(random)]
    for i, (M, K, bf16) in enumerate([*shapes, *drawn]):
        kind = EDGE_KINDS[i % len(EDGE_KINDS)] if edge else "normal"
        if kind == "normal":
            x = quant_inputs(rng, M, K, bf16)["x"]
        else:
            x = torch.from_numpy(_edge_input(rng, kind, M, K).astype(np.float32))
            x = x.to(torch.bfloat16) if bf16 else x
        what = f"{kind + ' ' if edge else ''}x of shape ({M}, {K}){' in bfloat16' if bf16 else ''}"
        try:
            got = probe.submission("per_token_group_quant_fp8", {"x": x}, {"M": M, "K": K})
        except SubmissionFault as fault:
            raise SubmissionFault(fault.status, f"{what}: {fault.message}", fault.traceback, fault.hint) from None
        problem = quant_problem(x, got["x_q"], got["x_s"])
        if problem:
            return f"{what}: {problem}"
    return None
