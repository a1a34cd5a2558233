"""GPU-side helpers used on both sides of the boundary: input recipes, timing and profiling.

Large GPU inputs (gigabytes of expert weights) do not travel through the pipe: both the grader
and the worker *materialise* them from the same recipe (kind, shape, dtype, seed) with torch's
device generator, which gives bit-identical tensors on the same device and torch version.

The timing harness follows the practice of GPU kernel contests (docs/lab-05-gpu.md): warm-up calls on their own inputs, an L2
flush before every timed call, fresh inputs for every timed call (one of them in a warm-up
call's buffers, refilled), a device-wide synchronise before the end event. The profiler helper returns the per-kernel table of the active
calls only. Imports nothing at module level beyond the standard library; torch on first use.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

_CACHE: dict[str, Any] = {}
FLUSH_BYTES = 256 << 20


def _torch() -> Any:
    import torch

    return torch


def _dtype(name: str) -> Any:
    return getattr(_torch(), name)


def recipe_key(recipe: dict[str, Any], device: str) -> str:
    return json.dumps([recipe, device], sort_keys=True)


def materialize(recipe: dict[str, Any], device: str, cache: bool = True) -> Any:
    """The tensor a recipe describes, on ``device``.

    Kinds: ``randn`` (normal values times ``scale``), ``rand`` (uniform in [low, high); with
    ``group`` the first element of every group of that many along the last dim is ``high``, so
    every group's largest magnitude is the same), ``routing_weights`` / ``routing_ids``
    (top-k of a softmax over random logits, weights renormalised; the same seed gives a
    matching pair), ``block_fp8`` (see :func:`block_fp8`). Weight-sized tensors are cached per
    process (``cache``).
    """
    key = recipe_key(recipe, device)
    if cache and key in _CACHE:
        return _CACHE[key]
    torch = _torch()
    g = torch.Generator(device=device).manual_seed(int(recipe["seed"]))
    kind = recipe["kind"]
    if kind == "randn":
        t = torch.randn(tuple(recipe["shape"]), generator=g, device=device, dtype=_dtype(recipe["dtype"]))
        t.mul_(float(recipe.get("scale", 1.0)))
    elif kind == "rand":
        low, high = float(recipe["low"]), float(recipe["high"])
        t = torch.rand(tuple(recipe["shape"]), generator=g, device=device, dtype=torch.float32).mul_(high - low).add_(low)
        if recipe.get("group"):
            t[..., :: int(recipe["group"])] = high
        t = t.to(_dtype(recipe["dtype"]))
    elif kind == "block_fp8":
        t = block_fp8(recipe, device)
    elif kind in ("routing_weights", "routing_ids"):
        tokens, experts, k = recipe["tokens"], recipe["experts"], recipe["k"]
        logits = torch.randn(tokens, experts, generator=g, device=device, dtype=torch.float32)
        weights, ids = torch.topk(torch.softmax(logits, -1), k)
        if kind == "routing_weights":
            t = (weights / weights.sum(-1, keepdim=True)).to(_dtype(recipe.get("dtype", "float32")))
        else:
            t = ids.to(_dtype(recipe.get("dtype", "int32")))
    else:
        raise ValueError(f"unknown recipe kind {kind!r}")
    if cache and recipe.get("cache"):
        _CACHE[key] = t
    return t


def block_fp8(recipe: dict[str, Any], device: str) -> Any:
    """One part of expert weights (E, N, K) quantised to e4m3 in blocks of ``block`` x ``block``,
    the DeepSeek-V3 layout. ``part``: ``weight`` (e4m3), ``scale`` (float32, (E, ceil(N/block),
    ceil(K/block)); dequantised weight = weight * the scale of its block) or ``original`` (the
    weights before quantisation, in ``dtype``). Normal values times ``scale`` (their absolute
    values with ``positive``), each block multiplied by 2**u, u uniform in [-spread, spread], so
    that a block read with another's scale is far off; ``uniform`` gives every block of an expert
    one scale (its largest magnitude / 448). Built one expert at a time into the result, so no
    float32 copy of the whole tensor is ever held."""
    torch = _torch()
    E, N, K = (int(n) for n in recipe["shape"])
    block = int(recipe.get("block", 128))
    nb, kb = -(-N // block), -(-K // block)
    part, dtype = recipe["part"], _dtype(recipe.get("source_dtype", "float32"))
    shapes = {"weight": ((E, N, K), torch.float8_e4m3fn), "scale": ((E, nb, kb), torch.float32), "original": ((E, N, K), dtype)}
    out = torch.empty(shapes[part][0], dtype=shapes[part][1], device=device)
    for e in range(E):
        g = torch.Generator(device=device).manual_seed(int(recipe["seed"]) * 100003 + e)
        w = torch.randn((N, K), generator=g, device=device, dtype=torch.float32) * float(recipe.get("scale", 1.0))
        if recipe.get("positive"):
            w = w.abs()
        spread = float(recipe.get("spread", 0.0))
        if spread:
            u = torch.rand((nb, kb), generator=g, device=device) * (2 * spread) - spread
            w = w * torch.exp2(u).repeat_interleave(block, 0)[:N].repeat_interleave(block, 1)[:, :K]
        w = w.to(dtype)  # the original, as the lab holds it
        if part == "original":
            out[e] = w
            continue
        padded = torch.zeros((nb * block, kb * block), device=device)
        padded[:N, :K] = w.float()
        tiles = padded.view(nb, block, kb, block)
        amax = tiles.abs().amax(dim=(1, 3))
        if recipe.get("uniform"):
            amax = torch.full_like(amax, float(amax.max()))
        scales = amax.clamp(min=1e-4) / 448.0
        if part == "scale":
            out[e] = scales
        else:
            q = (tiles / scales[:, None, :, None]).clamp(-448.0, 448.0).view(nb * block, kb * block)[:N, :K]
            out[e] = q.to(torch.float8_e4m3fn)
    return out


PROJECTIONS = 8
"""Signed sums in a fingerprint. Two answers to *different* inputs drawn alike have equal sums of
|x| and x^2 within a percent, so those alone cannot tell a stale answer from a fresh one; a sum
of x times a fixed pattern of signs differs between them by about its own size."""


PERIOD = 65521
"""The signed sums' patterns repeat every PERIOD positions (a prime, so no row length that is a
power of two lines up with it): the output is folded to PERIOD partial sums in one pass."""


def signed_sums(f: Any) -> list[float]:
    """sum(f * s_j) for PROJECTIONS fixed patterns s_j of +1/-1 (f flat, float64). s_j[i] is a bit
    of a multiplicative hash (Knuth's 2654435761, mod 2^32) of i mod PERIOD, so every process
    computes the same patterns without sharing a generator."""
    torch = _torch()
    n = f.numel()
    folded = torch.zeros(-(-n // PERIOD) * PERIOD, dtype=torch.float64, device=f.device)
    folded[:n] = f
    folded = folded.view(-1, PERIOD).sum(0)
    r = torch.arange(PERIOD, dtype=torch.int64, device=f.device)
    out = []
    for j in range(PROJECTIONS):
        bit = ((((r + 7919 * j) * 2654435761) & 0xFFFFFFFF) >> (16 + j)) & 1
        out.append(float(torch.where(bit.bool(), folded, -folded).sum()))
    return out


def fingerprint(t: Any) -> list[float]:
    """A cheap summary of a tensor, in float64: sum, sum of |x|, sum of squares, then the
    PROJECTIONS signed sums, which depend on where each value is."""
    torch = _torch()
    f = t.detach().to(torch.float64).reshape(-1)
    return [float(f.sum()), float(f.abs().sum()), float((f * f).sum()), *signed_sums(f)]


def flush_buffer(torch: Any) -> Any:
    """A buffer at least twice the L2 (and 256 MiB), zeroed before every timed call to empty the cache."""
    l2 = int(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", 0) or 0)
    return torch.empty(max(FLUSH_BYTES, 2 * l2) // 4, dtype=torch.int32, device="cuda")


def refill(target: Sequence[Any], source: Sequence[Any]) -> list[Any]:
    """``target``'s tensors with ``source``'s values copied in (same buffers, new values); shared
    tensors (the weights) and plain values are left as they are."""
    torch = _torch()
    out = []
    for old, new in zip(target, source):
        if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and old.data_ptr() != new.data_ptr():
            old.copy_(new)
        out.append(old if isinstance(old, torch.Tensor) else new)
    return out


def time_calls(
    fn: Callable[..., Any], input_sets: Sequence[Sequence[Any]], warmup: int = 3, budget_s: float = 3.0
) -> tuple[list[float], list[list[float]]]:
    """Per-call device times in microseconds and the fingerprint of each timed output.

    The first ``warmup`` input sets are for warm-up calls only and are never timed; each later
    set is timed once, so a timed call never sees an input a warm-up call saw. Every set is
    made beforehand and kept alive, so no buffer address is reused by another set. The first
    timed call is the exception that proves the rule: it runs on the first warm-up set's
    buffers refilled with its own values, as a CUDA-graph server reuses buffers, so an answer
    cached by buffer address or tensor identity is stale there and fails its fingerprint.
    Each timed call gets an L2 flush before it and a device-wide synchronise before its end event.
    """
    torch = _torch()
    if not 0 < warmup < len(input_sets):
        raise ValueError(f"need warm-up sets and timed sets: {warmup} warm-up of {len(input_sets)} sets")
    flush = flush_buffer(torch)
    warm, timed = input_sets[:warmup], list(input_sets[warmup:])
    for inputs in warm:
        fn(*inputs)
    torch.cuda.synchronize()
    timed[0] = refill(warm[0], timed[0])
    times, prints = [], []
    started = time.monotonic()
    for inputs in timed:
        flush.zero_()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(*inputs)
        torch.cuda.synchronize()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
        prints.append(fingerprint(out if not isinstance(out, (tuple, list)) else out[0]))
        if time.monotonic() - started > budget_s and len(times) >= 5:
            break
    return times, prints


def profile_calls(fn: Callable[..., Any], inputs: Sequence[Any], warmup: int = 2, active: int = 3) -> list[dict[str, Any]]:
    """Kernel rows of ``active`` profiled calls (after ``warmup`` unprofiled ones): name, device time, calls."""
    torch = _torch()
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn(*inputs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(active):
            fn(*inputs)
        torch.cuda.synchronize()
    rows: dict[str, dict[str, Any]] = {}
    for evt in prof.events():
        if evt.device_type != DeviceType.CUDA or evt.name.startswith("ProfilerStep"):
            continue
        if getattr(evt, "is_user_annotation", False):
            continue
        duration = getattr(evt, "device_time", None)
        if duration is None:
            duration = evt.self_device_time_total
        row = rows.setdefault(evt.name, {"name": evt.name, "device_time_us": 0.0, "calls": 0})
        row["device_time_us"] += float(duration)
        row["calls"] += 1
    out = sorted(rows.values(), key=lambda r: -r["device_time_us"])
    for r in out:
        r["device_time_us"] = round(r["device_time_us"] / active, 2)
        r["calls"] = int(math.ceil(r["calls"] / active))
    return out
