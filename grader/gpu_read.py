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


def read_sum(buf: Any, programs: int, block: int, warps: int) -> Any:
    """The float32 sum of ``buf``'s elements, per program (``programs`` of them)."""
    import torch

    partial = torch.empty(programs, dtype=torch.float32, device=buf.device)
    _read_kernel[(programs,)](buf, partial, buf.numel(), BLOCK=block, num_warps=warps)
    return partial


def variants(buf: Any, sms: int) -> Iterator[tuple[str, Callable[[], Any], int]]:
    """(name, call, bytes written) for each read shape at each grid size."""
    for block, warps in SHAPES:
        for per_sm in PROGRAMS_PER_SM:
            programs = sms * per_sm
            yield (
                f"triton read {block}x{warps}w, {per_sm}/SM",
                lambda p=programs, b=block, w=warps: read_sum(buf, p, b, w),
                programs * 4,
            )
