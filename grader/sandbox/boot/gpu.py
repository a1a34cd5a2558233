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

    Kinds: ``randn`` (normal values times ``scale``), ``routing_weights`` / ``routing_ids``
    (top-k of a softmax over random logits, weights renormalised; the same seed gives a
    matching pair). Weight-sized tensors are cached per process (``cache``).
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
