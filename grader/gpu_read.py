"""A Triton kernel that reads a buffer once and writes one number per program: the calibration's
read bandwidth (grader/hardware.py), measured the way Triton kernels such as the labs' read.

Imported only where Triton and a CUDA device are at hand (the grader's own process; it compiles
into the grader's cache, grader/gpu_cache.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import triton
import triton.language as tl

SHAPES = ((4096, 4), (8192, 8), (16384, 8))
"""(elements per load, warps): each loads 16 or 32 bytes per thread per step."""
PROGRAMS_PER_SM = (4, 8)
DOT_SHAPES = ((64, 128, 4, 4), (128, 128, 8, 4), (64, 256, 4, 5))
"""(BLOCK_N, BLOCK_K, warps, stages) of the weight-streaming read: the shape of the lab's decode
GEMMs, whose pipelined tile loads keep more bytes in flight than a plain streaming loop (on an
H100, 2026-12-08: the plain loop read at 2.95 TB/s, the lab's reference kernel at 3.1)."""
DOT_M = 16
DOT_K = 8192


@triton.jit
def _read_kernel(src_ptr, partial_ptr, n, BLOCK: tl.constexpr):
    """Grid-stride sum of src (as float32) into partial[program]: every element read once."""
    pid = tl.program_id(0)
    step = tl.num_programs(0) * BLOCK
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(pid * BLOCK, n, step):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(src_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(partial_ptr + pid, tl.sum(acc, 0))


@triton.jit
def _dot_read_kernel(w_ptr, x_ptr, out_ptr, N, K, M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr):
    """out[:, n-tile] = x @ w[n-tile, :].T for a row-major weight w (N, K): every weight read once
    in (BLOCK_N, BLOCK_K) tiles, as the lab's kernels read an expert's rows."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    ms = tl.arange(0, M)
    acc = tl.zeros([M, BLOCK_N], dtype=tl.float32)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        ks = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < N) & (ks[None, :] < K), other=0.0)
        x = tl.load(x_ptr + ms[:, None] * K + ks[None, :], mask=ks[None, :] < K, other=0.0)
        acc += tl.dot(x, tl.trans(w))
    tl.store(out_ptr + ms[:, None] * N + rows[None, :], acc, mask=rows[None, :] < N)


def dot_read(w: Any, x: Any, block_n: int, block_k: int, warps: int, stages: int) -> Any:
    """x (M, K) @ w (N, K).T in float32, reading w once."""
    import torch

    N, K = w.shape
    out = torch.empty(x.shape[0], N, dtype=torch.float32, device=w.device)
    grid = (triton.cdiv(N, block_n),)
    _dot_read_kernel[grid](w, x, out, N, K, M=x.shape[0], BLOCK_N=block_n, BLOCK_K=block_k, STAGES=stages, num_warps=warps)
    return out


def read_sum(buf: Any, programs: int, block: int, warps: int) -> Any:
    """The float32 sum of ``buf``'s elements, per program (``programs`` of them)."""
    import torch

    partial = torch.empty(programs, dtype=torch.float32, device=buf.device)
    _read_kernel[(programs,)](buf, partial, buf.numel(), BLOCK=block, num_warps=warps)
    return partial


def variants(buf: Any, sms: int) -> Iterator[tuple[str, Callable[[], Any], int]]:
    """(name, call, bytes read besides ``buf`` plus bytes written) for each read shape at each
    grid size, and for the weight-streaming read at each of its tile shapes."""
    import torch

    w = buf.view(-1, DOT_K)
    x = torch.randn(DOT_M, DOT_K, device=buf.device).to(buf.dtype)
    for block_n, block_k, warps, stages in DOT_SHAPES:
        yield (
            f"triton weight read {block_n}x{block_k} {warps}w {stages}s",
            lambda bn=block_n, bk=block_k, wp=warps, st=stages: dot_read(w, x, bn, bk, wp, st),
            DOT_M * DOT_K * buf.element_size() + DOT_M * w.shape[0] * 4,
        )
    for block, warps in SHAPES:
        for per_sm in PROGRAMS_PER_SM:
            programs = sms * per_sm
            yield (
                f"triton read {block}x{warps}w, {per_sm}/SM",
                lambda p=programs, b=block, w=warps: read_sum(buf, p, b, w),
                programs * 4,
            )
