"""lab-05 reference solution: the fused MoE expert computation in Triton.

Three phases, as a production fused_moe runs them:

1. ``moe_align_block_size``: group the T*k (token, expert) assignments by expert and pad each
   expert's group to a multiple of BLOCK_M with the sentinel T*k. One kernel when the batch is
   small (decode); a count kernel, a prefix-sum kernel and a scatter kernel otherwise. No host
   synchronisation: the padded length stays on the device.
2. GEMM 1 with SwiGLU in its epilogue: for each block of BLOCK_M sorted assignments (all of one
   expert) and BLOCK_N columns of the intermediate width, gather the tokens' rows of x, multiply
   by the expert's gate rows and up rows (two accumulators), and store silu(gate) * up, in
   sorted order, so GEMM 2 reads it contiguously. The separate activation pass of a plain
   implementation disappears.
3. GEMM 2 with the routing weight in its epilogue: h @ w2[e].T for each block, times each row's
   routing weight, added atomically into a float32 output at the row's token (that sum over
   the k experts is the combine). For small batches GEMM 2 splits K across programs, which the
   atomic accumulation makes free.

Tile shapes, warps and pipeline depth come from CONFIGS, a table per GPU model written by
``benchmarks/moe_gpu.py --tune`` on that GPU; a GPU with no table (or a shape with none) runs
GENERIC, and the Triton CPU interpreter gets small tiles.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

EXERCISE = "lab-05-fused-moe-kernel"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# --- phase 1: align ------------------------------------------------------------------------------


@triton.jit
def _layout(
    counts, e, counts_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr,
    numel, num_experts, sorted_len, max_blocks, BLOCK_M: tl.constexpr, FILL: tl.constexpr,
):  # fmt: skip
    """From per-expert counts: the padded length, the sentinel fill, each block's expert.
    The counts become cursors (each group's start) for the scatter that follows."""
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, 0)
    tl.store(total_ptr, tl.sum(padded, 0))
    for start in range(0, sorted_len, FILL):
        pos = start + tl.arange(0, FILL)
        tl.store(sorted_ids_ptr + pos, tl.zeros([FILL], dtype=tl.int32) + numel, mask=pos < sorted_len)
    for start in range(0, max_blocks, FILL):
        blk = start + tl.arange(0, FILL)
        # expert of block b = number of experts whose padded group ends at or before b*BLOCK_M
        owner = tl.sum((ends[None, :] <= blk[:, None] * BLOCK_M).to(tl.int32) * (e[None, :] < num_experts), 1)
        tl.store(expert_ids_ptr + blk, owner, mask=blk < max_blocks)
    tl.store(counts_ptr + e, ends - padded, mask=e < num_experts)


@triton.jit
def _align_small_kernel(
    topk_ids_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr, counts_ptr,
    numel, num_experts, sorted_len, max_blocks,
    BLOCK_M: tl.constexpr, NUMEL_P2: tl.constexpr, E_P2: tl.constexpr, FILL: tl.constexpr,
):  # fmt: skip
    """One program does it all (decode-sized batches): count, prefix sum, fill, scatter."""
    e = tl.arange(0, E_P2)
    tl.store(counts_ptr + e, tl.zeros([E_P2], dtype=tl.int32), mask=e < num_experts)
    tl.debug_barrier()
    offs = tl.arange(0, NUMEL_P2)
    valid = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=valid, other=0).to(tl.int32)
    tl.atomic_add(counts_ptr + ids, 1, mask=valid)
    tl.debug_barrier()
    counts = tl.load(counts_ptr + e, mask=e < num_experts, other=0, volatile=True)
    _layout(counts, e, counts_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr,
            numel, num_experts, sorted_len, max_blocks, BLOCK_M, FILL)  # fmt: skip
    tl.debug_barrier()
    pos = tl.atomic_add(counts_ptr + ids, 1, mask=valid)
    tl.store(sorted_ids_ptr + pos, offs, mask=valid)


@triton.jit
def _count_kernel(topk_ids_ptr, counts_ptr, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=valid, other=0).to(tl.int32)
    tl.atomic_add(counts_ptr + ids, 1, mask=valid)


@triton.jit
def _offsets_kernel(
    counts_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr,
    numel, num_experts, sorted_len, max_blocks,
    BLOCK_M: tl.constexpr, E_P2: tl.constexpr, FILL: tl.constexpr,
):  # fmt: skip
    """Single program: padded prefix sum, block owners, sentinel fill; counts become cursors."""
    e = tl.arange(0, E_P2)
    counts = tl.load(counts_ptr + e, mask=e < num_experts, other=0)
    _layout(counts, e, counts_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr,
            numel, num_experts, sorted_len, max_blocks, BLOCK_M, FILL)  # fmt: skip


@triton.jit
def _scatter_kernel(topk_ids_ptr, cursor_ptr, sorted_ids_ptr, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=valid, other=0).to(tl.int32)
    pos = tl.atomic_add(cursor_ptr + ids, 1, mask=valid)
    tl.store(sorted_ids_ptr + pos, offs, mask=valid)


def max_blocks(numel: int, num_experts: int, block_m: int) -> int:
    """An upper bound on the number of padded blocks: each used expert adds at most one partial block."""
    return min(num_experts, numel) + triton.cdiv(numel, block_m)


SMALL_ALIGN = 1024


def moe_align_block_size(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    """Sorted assignment ids padded per expert to a multiple of block_m with the sentinel T*k,
    the expert of each block, and the padded length (a one-element int32 tensor: no host sync)."""
    numel = topk_ids.numel()
    blocks = max_blocks(numel, num_experts, block_m)
    sorted_len = blocks * block_m
    device = topk_ids.device
    ids = topk_ids.reshape(-1)
    sorted_ids = torch.empty(sorted_len, dtype=torch.int32, device=device)
    expert_ids = torch.empty(blocks, dtype=torch.int32, device=device)
    total = torch.empty(1, dtype=torch.int32, device=device)
    e_p2 = triton.next_power_of_2(max(num_experts, 2))
    if numel <= SMALL_ALIGN:
        counts = torch.empty(num_experts, dtype=torch.int32, device=device)
        _align_small_kernel[(1,)](
            ids, sorted_ids, expert_ids, total, counts, numel, num_experts, sorted_len, blocks,
            BLOCK_M=block_m, NUMEL_P2=triton.next_power_of_2(max(numel, 2)), E_P2=e_p2, FILL=256,
        )  # fmt: skip
    else:
        counts = torch.zeros(num_experts, dtype=torch.int32, device=device)
        grid = (triton.cdiv(numel, 1024),)
        _count_kernel[grid](ids, counts, numel, BLOCK=1024)
        _offsets_kernel[(1,)](
            counts, sorted_ids, expert_ids, total, numel, num_experts, sorted_len, blocks,
            BLOCK_M=block_m, E_P2=e_p2, FILL=1024,
        )  # fmt: skip
        _scatter_kernel[grid](ids, counts, sorted_ids, numel, BLOCK=1024)
    return sorted_ids, expert_ids, total


# --- phases 2 and 3: the expert GEMMs ------------------------------------------------------------


@triton.jit
def _tile_ids(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped order: GROUP_M row-blocks share each weight tile while it is hot in L2."""
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    size_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % size_m
    pid_n = (pid % in_group) // size_m
    return pid_m, pid_n


@triton.jit
def _gemm1_swiglu_kernel(
    x_ptr, w1_ptr, h_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr,
    numel, top_k, N, K, num_pid_m,
    stride_xm, stride_we, stride_wn, stride_hm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
    INTERLEAVE: tl.constexpr, PERSISTENT: tl.constexpr,
):  # fmt: skip
    """h[sorted row, n] = silu(x[token] @ gate[e, n]) * (x[token] @ up[e, n]), tile by tile.

    BLOCK_N counts output columns of h. INTERLEAVE loads the gate rows and the up rows of those
    columns as one (BLOCK_K, 2*BLOCK_N) tile, so one MMA with one accumulator does both, and
    splits the accumulator in the epilogue. PERSISTENT makes each program loop over tiles."""
    num_pid_n = tl.cdiv(N, BLOCK_N)
    total = tl.load(total_ptr)
    num_tiles = num_pid_m * num_pid_n
    step = tl.num_programs(0) if PERSISTENT else num_tiles
    for tile in range(tl.program_id(0), num_tiles, step):
        pid_m, pid_n = _tile_ids(tile, num_pid_m, num_pid_n, GROUP_M)
        if pid_m * BLOCK_M < total:
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots = tl.load(sorted_ids_ptr + offs_m)
            valid = slots < numel
            tokens = tl.where(valid, slots // top_k, 0).to(tl.int64)
            expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
            offs_k = tl.arange(0, BLOCK_K)
            a_ptrs = x_ptr + tokens[:, None] * stride_xm + offs_k[None, :]
            w_base = w1_ptr + expert * stride_we
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            n_ok = offs_n < N
            if INTERLEAVE:
                cols = tl.arange(0, 2 * BLOCK_N)
                rows = pid_n * BLOCK_N + (cols % BLOCK_N) + (cols // BLOCK_N) * N
                rows_ok = (pid_n * BLOCK_N + (cols % BLOCK_N)) < N
                b_ptrs = w_base + rows[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
                acc = tl.zeros([BLOCK_M, 2 * BLOCK_N], dtype=tl.float32)
                for kk in range(0, tl.cdiv(K, BLOCK_K)):
                    if EVEN_K:
                        a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
                        if EVEN_N:
                            b = tl.load(b_ptrs)
                        else:
                            b = tl.load(b_ptrs, mask=rows_ok[None, :], other=0.0)
                    else:
                        k_ok = offs_k < K - kk * BLOCK_K
                        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
                        b = tl.load(b_ptrs, mask=k_ok[:, None] & rows_ok[None, :], other=0.0)
                    acc = tl.dot(a, b, acc)
                    a_ptrs += BLOCK_K
                    b_ptrs += BLOCK_K
                gate, up = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N)), (0, 2, 1)))
            else:
                g_ptrs = w_base + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
                u_ptrs = g_ptrs + N * stride_wn
                gate = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                for kk in range(0, tl.cdiv(K, BLOCK_K)):
                    if EVEN_K:
                        a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
                        if EVEN_N:
                            g = tl.load(g_ptrs)
                            u = tl.load(u_ptrs)
                        else:
                            g = tl.load(g_ptrs, mask=n_ok[None, :], other=0.0)
                            u = tl.load(u_ptrs, mask=n_ok[None, :], other=0.0)
                    else:
                        k_ok = offs_k < K - kk * BLOCK_K
                        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
                        g = tl.load(g_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                        u = tl.load(u_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                    gate = tl.dot(a, g, gate)
                    up = tl.dot(a, u, up)
                    a_ptrs += BLOCK_K
                    g_ptrs += BLOCK_K
                    u_ptrs += BLOCK_K
            h = gate / (1.0 + tl.exp(-gate)) * up
            h_ptrs = h_ptr + offs_m[:, None].to(tl.int64) * stride_hm + offs_n[None, :]
            tl.store(h_ptrs, h.to(h_ptr.dtype.element_ty), mask=n_ok[None, :])


@triton.jit
def _gemm2_combine_kernel(
    h_ptr, w2_ptr, out_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr, weights_ptr,
    numel, top_k, N, K, num_pid_m, k_per_split,
    stride_hm, stride_we, stride_wn, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, PERSISTENT: tl.constexpr,
):  # fmt: skip
    """out[token] += routing weight * (h[sorted rows] @ w2[e].T) over this program's K slice."""
    num_pid_n = tl.cdiv(N, BLOCK_N)
    total = tl.load(total_ptr)
    num_tiles = num_pid_m * num_pid_n
    step = tl.num_programs(0) if PERSISTENT else num_tiles
    k_start = tl.program_id(1) * k_per_split
    for tile in range(tl.program_id(0), num_tiles, step):
        pid_m, pid_n = _tile_ids(tile, num_pid_m, num_pid_n, GROUP_M)
        if pid_m * BLOCK_M < total:
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots = tl.load(sorted_ids_ptr + offs_m)
            valid = slots < numel
            expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            offs_k = k_start + tl.arange(0, BLOCK_K)
            a_ptrs = h_ptr + offs_m[:, None].to(tl.int64) * stride_hm + offs_k[None, :]
            b_ptrs = w2_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
            n_ok = offs_n < N
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for kk in range(0, tl.cdiv(k_per_split, BLOCK_K)):
                if EVEN_K:
                    a = tl.load(a_ptrs)
                    if EVEN_N:
                        b = tl.load(b_ptrs)
                    else:
                        b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
                else:
                    k_ok = (offs_k < K - kk * BLOCK_K) & (offs_k < k_start + k_per_split - kk * BLOCK_K)
                    a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
                    b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                acc = tl.dot(a, b, acc)
                a_ptrs += BLOCK_K
                b_ptrs += BLOCK_K
            weight = tl.load(weights_ptr + slots, mask=valid, other=0.0).to(tl.float32)
            acc = acc * weight[:, None]
            tokens = tl.where(valid, slots // top_k, 0).to(tl.int64)
            out_ptrs = out_ptr + tokens[:, None] * stride_om + offs_n[None, :]
            tl.atomic_add(out_ptrs, acc, mask=valid[:, None] & n_ok[None, :])


# --- configuration ----------------------------------------------------------------------------------

# A GEMM 1 config is (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, INTERLEAVE,
# PERSISTENT); a GEMM 2 config is (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages,
# SPLIT_K, PERSISTENT). PERSISTENT is programs per SM (0: one program per tile).
# CONFIGS[GPU name][(E, H, I)] = [(up to this many tokens, gemm1, gemm2), ...]. Each table is
# tuned on that GPU by `benchmarks/moe_gpu.py --tune`, which writes the block between the BEGIN
# and END lines (`--apply`); see docs/lab-05-gpu.md. A GPU or shape without a table runs GENERIC.
# BEGIN CONFIGS
TUNED_ON = {
    "NVIDIA H100 80GB HBM3": "2026-11-22, one H100 80GB HBM3, torch 2.11.0+cu130, triton 3.6.0",
    "NVIDIA H200": "untuned: GENERIC for every shape until `benchmarks/moe_gpu.py --tune` runs on one",
}
CONFIGS: dict[str, dict[tuple[int, int, int], list[tuple[int, tuple[int, ...], tuple[int, ...]]]]] = {
    "NVIDIA H100 80GB HBM3": {
        (8, 4096, 14336): [
            (1, (16, 32, 256, 1, 4, 4, 0, 0), (16, 128, 128, 1, 8, 4, 4, 0)),
            (8, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 256, 1, 4, 4, 2, 0)),
            (64, (32, 64, 128, 1, 4, 4, 0, 0), (32, 128, 128, 1, 4, 4, 2, 0)),
            (512, (64, 256, 64, 8, 8, 3, 0, 0), (64, 128, 64, 8, 8, 3, 1, 0)),
            (1 << 30, (128, 128, 64, 32, 8, 4, 1, 0), (128, 256, 64, 8, 8, 4, 1, 0)),
        ],
        (256, 7168, 2048): [
            (1, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 128, 1, 4, 4, 2, 0)),
            (8, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 128, 1, 4, 4, 1, 0)),
            (64, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 128, 1, 4, 4, 1, 0)),
            (512, (32, 64, 128, 1, 4, 4, 0, 0), (32, 64, 128, 1, 4, 4, 1, 0)),
            (1 << 30, (128, 128, 64, 8, 8, 3, 0, 0), (128, 128, 64, 8, 8, 3, 1, 0)),
        ],
    },
    "NVIDIA H200": {},
}
# END CONFIGS

GENERIC = [
    (8, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 128, 1, 4, 4, 2, 0)),
    (64, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 128, 1, 4, 4, 1, 0)),
    (512, (64, 128, 64, 8, 4, 3, 0, 0), (64, 128, 64, 8, 4, 3, 1, 0)),
    (1 << 30, (128, 128, 64, 8, 8, 4, 0, 0), (128, 128, 64, 8, 8, 3, 1, 0)),
]
INTERPRETER = ((16, 32, 32, 1, 4, 1, 0, 0), (16, 32, 32, 1, 4, 1, 2, 0))


@functools.lru_cache(maxsize=8)
def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def pick_config(
    num_tokens: int, num_experts: int, hidden: int, inter: int, device: str = ""
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if INTERPRET:
        return INTERPRETER
    for limit, c1, c2 in CONFIGS.get(device, {}).get((num_experts, hidden, inter), GENERIC):
        if num_tokens <= limit:
            return c1, c2
    raise AssertionError("unreachable: the last config has no limit")


def _grid(tiles: int, persistent: int, device: torch.device) -> int:
    if not persistent or device.type != "cuda":
        return tiles
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return min(tiles, sms * persistent)


# --- the layer ----------------------------------------------------------------------------------


def fused_moe(x, w1, w2, topk_weights, topk_ids, config=None):
    """sum_j w_j * (silu(x @ gate_e.T) * (x @ up_e.T)) @ w2[e].T for e = topk_ids[t, j], in x's dtype."""
    T, H = x.shape
    E, two_i, _ = w1.shape
    inter = two_i // 2
    top_k = topk_ids.shape[1]
    numel = T * top_k
    c1, c2 = config or pick_config(T, E, H, inter, device_name(x.device))
    bm = c1[0]
    assert c2[0] == bm, "both GEMMs walk the same aligned blocks"
    x = x.contiguous()
    sorted_ids, expert_ids, total = moe_align_block_size(topk_ids, E, bm)
    blocks = expert_ids.numel()
    h = torch.empty((blocks * bm, inter), dtype=x.dtype, device=x.device)
    bn1, bk1 = c1[1], c1[2]
    tiles1 = blocks * triton.cdiv(inter, bn1)
    _gemm1_swiglu_kernel[(_grid(tiles1, c1[7], x.device),)](
        x, w1, h, sorted_ids, expert_ids, total,
        numel, top_k, inter, H, blocks,
        x.stride(0), w1.stride(0), w1.stride(1), h.stride(0),
        BLOCK_M=bm, BLOCK_N=bn1, BLOCK_K=bk1, GROUP_M=c1[3],
        EVEN_K=H % bk1 == 0, EVEN_N=inter % bn1 == 0, INTERLEAVE=bool(c1[6]), PERSISTENT=bool(c1[7]),
        num_warps=c1[4], num_stages=c1[5],
    )  # fmt: skip
    out = torch.zeros((T, H), dtype=torch.float32, device=x.device)
    bn2, bk2, split = c2[1], c2[2], c2[6]
    k_per_split = triton.cdiv(triton.cdiv(inter, split), bk2) * bk2
    split = triton.cdiv(inter, k_per_split)
    tiles2 = blocks * triton.cdiv(H, bn2)
    _gemm2_combine_kernel[(_grid(tiles2, c2[7], x.device), split)](
        h, w2, out, sorted_ids, expert_ids, total, topk_weights.reshape(-1),
        numel, top_k, H, inter, blocks, k_per_split,
        h.stride(0), w2.stride(0), w2.stride(1), out.stride(0),
        BLOCK_M=bm, BLOCK_N=bn2, BLOCK_K=bk2, GROUP_M=c2[3],
        EVEN_K=inter % k_per_split == 0 and k_per_split % bk2 == 0, EVEN_N=H % bn2 == 0,
        PERSISTENT=bool(c2[7]), num_warps=c2[4], num_stages=c2[5],
    )  # fmt: skip
    return out if x.dtype == torch.float32 else out.to(x.dtype)
