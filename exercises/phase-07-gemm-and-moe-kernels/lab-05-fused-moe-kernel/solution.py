"""lab-05 reference solution: the fused MoE expert computation in Triton.

Three phases, as a production fused_moe runs them:

1. ``moe_align_block_size``: group the T*k (token, expert) assignments by expert and pad each
   expert's group to a multiple of BLOCK_M with the sentinel T*k. Up to 4096 assignments one
   program does it all in one launch (sentinel fill, histogram, padded prefix sum, block labels,
   an atomic scatter); above, up to 32 programs each count a chunk, then each reads every
   chunk's counts, labels the blocks of the experts it owns and scatters its chunk: two
   launches, no tile larger than (chunks, experts), no host synchronisation (the padded length
   stays on the device). For one token there is no align at all: its k experts are distinct,
   so block b is assignment b and its expert is topk_ids[b] (the GEMMs' NAIVE path).
2. GEMM 1 with SwiGLU in its epilogue: for each block of BLOCK_M sorted assignments (all of one
   expert) and BLOCK_N columns of the intermediate width, gather the tokens' rows of x, multiply
   by the expert's gate rows and up rows (two accumulators, or one over an interleaved tile),
   and store silu(gate) * up, in sorted order, so GEMM 2 reads it contiguously. The separate
   activation pass of a plain implementation disappears.
3. GEMM 2 with the routing weight in its epilogue: h @ w2[e].T for each block, times each row's
   routing weight, added atomically into a float32 output at the row's token (that sum over
   the k experts is the combine). For small batches GEMM 2 splits K across programs, which the
   atomic accumulation makes free.

Either GEMM can load its weight tiles through TMA tensor descriptors (Hopper's copy engine, no
masks at the edges) and run as a persistent grid in grouped tile order; tile shapes, warps,
stages and those switches come from CONFIGS, a table per GPU model written by
``benchmarks/moe_gpu.py --tune`` on that GPU. A GPU with no table (or a shape with none) runs
GENERIC, chosen by the load of an expert; the Triton CPU interpreter gets wide tiles.
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
def _fill(sorted_ids_ptr, start, stop, numel, BLOCK: tl.constexpr):
    """The sentinel in sorted_ids[start:stop]: every slot no assignment takes, padding included."""
    for base in range(start, stop, BLOCK):
        offs = base + tl.arange(0, BLOCK)
        tl.store(sorted_ids_ptr + offs, tl.zeros([BLOCK], dtype=tl.int32) + numel, mask=offs < stop)


@triton.jit
def _label(starts, padded, e, mine, expert_ids_ptr, BLOCK_M: tl.constexpr):
    """For the experts in ``mine``, their id in every block of their group. Groups are disjoint,
    so programs that own different experts never write the same block."""
    blocks = padded // BLOCK_M
    first = starts // BLOCK_M
    for j in range(0, tl.max(tl.where(mine, blocks, 0), 0)):
        tl.store(expert_ids_ptr + first + j, e, mask=mine & (j < blocks))


@triton.jit
def _histogram(topk_ids_ptr, start, stop, E_P2: tl.constexpr, BLOCK: tl.constexpr):
    """Assignments per expert among topk_ids[start:stop], BLOCK at a time."""
    e = tl.arange(0, E_P2)
    counts = tl.zeros([E_P2], dtype=tl.int32)
    for base in range(start, stop, BLOCK):
        offs = base + tl.arange(0, BLOCK)
        valid = offs < stop
        ids = tl.load(topk_ids_ptr + offs, mask=valid, other=0).to(tl.int32)
        # lanes past the end read as expert 0: take them back out of its count
        counts += tl.histogram(ids, E_P2) - tl.where(e == 0, BLOCK - tl.sum(valid.to(tl.int32), 0), 0)
    return counts


@triton.jit
def _scatter(topk_ids_ptr, cursor_ptr, sorted_ids_ptr, start, stop, BLOCK: tl.constexpr):
    """Each assignment of topk_ids[start:stop] to the next free slot of its expert's group."""
    for base in range(start, stop, BLOCK):
        offs = base + tl.arange(0, BLOCK)
        valid = offs < stop
        ids = tl.load(topk_ids_ptr + offs, mask=valid, other=0).to(tl.int32)
        slot = tl.atomic_add(cursor_ptr + ids, 1, mask=valid)
        tl.store(sorted_ids_ptr + slot, offs, mask=valid)


@triton.jit
def _align_one_program(
    topk_ids_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr, cursor_ptr, numel, num_experts, sorted_len,
    BLOCK_M: tl.constexpr, E_P2: tl.constexpr, BLOCK: tl.constexpr, FILL: tl.constexpr,
):  # fmt: skip
    """Small batches, one launch: sentinel fill, histogram, padded prefix sum, block labels, scatter."""
    _fill(sorted_ids_ptr, 0, sorted_len, numel, FILL)
    e = tl.arange(0, E_P2)
    e_ok = e < num_experts
    counts = _histogram(topk_ids_ptr, 0, numel, E_P2, BLOCK)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    starts = tl.cumsum(padded, 0) - padded
    tl.store(total_ptr, tl.sum(padded, 0))
    tl.store(cursor_ptr + e, starts, mask=e_ok)
    _label(starts, padded, e, e_ok, expert_ids_ptr, BLOCK_M)
    tl.debug_barrier()
    _scatter(topk_ids_ptr, cursor_ptr, sorted_ids_ptr, 0, numel, BLOCK)


@triton.jit
def _count_chunks(
    topk_ids_ptr, counts_ptr, sorted_ids_ptr, numel, chunk, sorted_len, fill_chunk,
    E_P2: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Large batches, launch 1 of 2: program p counts its chunk of the assignments per expert,
    and fills its share of sorted_ids with the sentinel."""
    p = tl.program_id(0)
    counts = _histogram(topk_ids_ptr, p * chunk, tl.minimum(p * chunk + chunk, numel), E_P2, BLOCK)
    tl.store(counts_ptr + p * E_P2 + tl.arange(0, E_P2), counts)
    _fill(sorted_ids_ptr, p * fill_chunk, tl.minimum(p * fill_chunk + fill_chunk, sorted_len), numel, BLOCK)


@triton.jit
def _place_chunks(
    topk_ids_ptr, counts_ptr, cursor_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr,
    numel, num_experts, chunk, programs,
    BLOCK_M: tl.constexpr, E_P2: tl.constexpr, P_P2: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Large batches, launch 2 of 2: every program reads all the chunks' counts, so it knows each
    group's start and where its own chunk's assignments go in it; it labels the blocks of the
    experts it owns (e % programs == p) and scatters its chunk."""
    p = tl.program_id(0)
    e = tl.arange(0, E_P2)
    e_ok = e < num_experts
    rows = tl.arange(0, P_P2)
    table = tl.load(counts_ptr + rows[:, None] * E_P2 + e[None, :], mask=rows[:, None] < programs, other=0)
    counts = tl.sum(table, 0)
    earlier = tl.sum(tl.where(rows[:, None] < p, table, 0), 0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    starts = tl.cumsum(padded, 0) - padded
    tl.store(total_ptr, tl.sum(padded, 0), mask=p == 0)
    tl.store(cursor_ptr + p * E_P2 + e, starts + earlier)
    _label(starts, padded, e, e_ok & (e % programs == p), expert_ids_ptr, BLOCK_M)
    tl.debug_barrier()
    _scatter(topk_ids_ptr, cursor_ptr + p * E_P2, sorted_ids_ptr, p * chunk, tl.minimum(p * chunk + chunk, numel), BLOCK)


def max_blocks(numel: int, num_experts: int, block_m: int) -> int:
    """An upper bound on the number of padded blocks: each used expert adds at most one partial block."""
    return min(num_experts, numel) + triton.cdiv(numel, block_m)


SMALL_ALIGN = 4096
"""Up to this many assignments one program aligns them all; above, the chunks are counted and
placed by up to ALIGN_PROGRAMS programs in two launches."""
ALIGN_PROGRAMS = 32
ALIGN_BLOCK = 1024


def moe_align_block_size(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    """Sorted assignment ids padded per expert to a multiple of block_m with the sentinel T*k,
    the expert of each block, and the padded length (a one-element int32 tensor: no host sync).
    Blocks past the padded length hold only the sentinel; their expert ids are never read."""
    numel = topk_ids.numel()
    blocks = max_blocks(numel, num_experts, block_m)
    device = topk_ids.device
    ids = topk_ids.reshape(-1)
    sorted_ids = torch.empty(blocks * block_m, dtype=torch.int32, device=device)
    expert_ids = torch.empty(blocks, dtype=torch.int32, device=device)
    total = torch.empty(1, dtype=torch.int32, device=device)
    e_p2 = triton.next_power_of_2(max(num_experts, 2))
    if numel <= SMALL_ALIGN:
        cursor = torch.empty(e_p2, dtype=torch.int32, device=device)
        block = min(ALIGN_BLOCK, triton.next_power_of_2(max(numel, 16)))
        _align_one_program[(1,)](
            ids, sorted_ids, expert_ids, total, cursor, numel, num_experts, sorted_ids.numel(),
            BLOCK_M=block_m, E_P2=e_p2, BLOCK=block, FILL=ALIGN_BLOCK, num_warps=8 if e_p2 >= 256 else 4,
        )  # fmt: skip
        return sorted_ids, expert_ids, total
    chunk = triton.cdiv(triton.cdiv(numel, ALIGN_PROGRAMS), ALIGN_BLOCK) * ALIGN_BLOCK
    programs = triton.cdiv(numel, chunk)
    counts = torch.empty((programs, e_p2), dtype=torch.int32, device=device)
    cursor = torch.empty((programs, e_p2), dtype=torch.int32, device=device)
    fill_chunk = triton.cdiv(sorted_ids.numel(), programs)
    _count_chunks[(programs,)](
        ids, counts, sorted_ids, numel, chunk, sorted_ids.numel(), fill_chunk, E_P2=e_p2, BLOCK=ALIGN_BLOCK, num_warps=4,
    )  # fmt: skip
    _place_chunks[(programs,)](
        ids, counts, cursor, sorted_ids, expert_ids, total, numel, num_experts, chunk, programs,
        BLOCK_M=block_m, E_P2=e_p2, P_P2=triton.next_power_of_2(programs), BLOCK=ALIGN_BLOCK,
        num_warps=8 if e_p2 >= 256 else 4,
    )  # fmt: skip
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
def _block_rows(pid_m, sorted_ids_ptr, expert_ids_ptr, numel, BLOCK_M: tl.constexpr, NAIVE: tl.constexpr):
    """The assignment slots of block pid_m (``numel`` marks padding) and its expert. NAIVE (one
    token, so its k experts are distinct): block b holds assignment b alone and expert_ids_ptr
    is topk_ids itself, so no align runs at all."""
    rows = tl.arange(0, BLOCK_M)
    if NAIVE:
        slots = tl.where(rows == 0, pid_m, numel)
    else:
        slots = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + rows)
    return slots, tl.load(expert_ids_ptr + pid_m).to(tl.int64)


@triton.jit
def _live_blocks(total_ptr, numel, BLOCK_M: tl.constexpr, NAIVE: tl.constexpr):
    if NAIVE:
        return numel
    return tl.load(total_ptr) // BLOCK_M


@triton.jit
def _gemm1_swiglu_kernel(
    x_ptr, w1_ptr, w1_desc, h_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr,
    numel, top_k, N, K, num_pid_m,
    stride_xm, stride_we, stride_wn, stride_hm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
    INTERLEAVE: tl.constexpr, PERSISTENT: tl.constexpr, NAIVE: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    """h[sorted row, n] = silu(x[token] @ gate[e, n]) * (x[token] @ up[e, n]), tile by tile.

    BLOCK_N counts output columns of h. INTERLEAVE loads the gate rows and the up rows of those
    columns as one (BLOCK_K, 2*BLOCK_N) tile, so one MMA with one accumulator does both, and
    splits the accumulator in the epilogue. TMA loads the weight tiles through w1_desc (Hopper's
    tensor memory accelerator; past the edges it reads zeros, so no masks) with two accumulators.
    PERSISTENT makes each program loop over tiles."""
    num_pid_n = tl.cdiv(N, BLOCK_N)
    live = _live_blocks(total_ptr, numel, BLOCK_M, NAIVE)
    num_tiles = num_pid_m * num_pid_n
    step = tl.num_programs(0) if PERSISTENT else num_tiles
    for tile in range(tl.program_id(0), num_tiles, step):
        pid_m, pid_n = _tile_ids(tile, num_pid_m, num_pid_n, GROUP_M)
        if pid_m < live:
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots, expert = _block_rows(pid_m, sorted_ids_ptr, expert_ids_ptr, numel, BLOCK_M, NAIVE)
            valid = slots < numel
            tokens = tl.where(valid, slots // top_k, 0).to(tl.int64)
            offs_k = tl.arange(0, BLOCK_K)
            a_ptrs = x_ptr + tokens[:, None] * stride_xm + offs_k[None, :]
            w_base = w1_ptr + expert * stride_we
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            n_ok = offs_n < N
            if TMA:
                gate = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                e32 = expert.to(tl.int32)
                for kk in range(0, tl.cdiv(K, BLOCK_K)):
                    if EVEN_K:
                        a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
                    else:
                        a = tl.load(a_ptrs, mask=valid[:, None] & (offs_k[None, :] < K - kk * BLOCK_K), other=0.0)
                    g = tl.reshape(w1_desc.load([e32, pid_n * BLOCK_N, kk * BLOCK_K]), (BLOCK_N, BLOCK_K))
                    u = tl.reshape(w1_desc.load([e32, N + pid_n * BLOCK_N, kk * BLOCK_K]), (BLOCK_N, BLOCK_K))
                    gate = tl.dot(a, tl.trans(g), gate)
                    up = tl.dot(a, tl.trans(u), up)
                    a_ptrs += BLOCK_K
            elif INTERLEAVE:
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
    h_ptr, w2_ptr, w2_desc, out_ptr, sorted_ids_ptr, expert_ids_ptr, total_ptr, weights_ptr,
    numel, top_k, N, K, num_pid_m, k_per_split,
    stride_hm, stride_we, stride_wn, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, PERSISTENT: tl.constexpr, NAIVE: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    """out[token] += routing weight * (h[sorted rows] @ w2[e].T) over this program's K slice.
    With TMA the weight tile comes through w2_desc; the slice's bound is kept by masking h."""
    num_pid_n = tl.cdiv(N, BLOCK_N)
    live = _live_blocks(total_ptr, numel, BLOCK_M, NAIVE)
    num_tiles = num_pid_m * num_pid_n
    step = tl.num_programs(0) if PERSISTENT else num_tiles
    k_start = tl.program_id(1) * k_per_split
    for tile in range(tl.program_id(0), num_tiles, step):
        pid_m, pid_n = _tile_ids(tile, num_pid_m, num_pid_n, GROUP_M)
        if pid_m < live:
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots, expert = _block_rows(pid_m, sorted_ids_ptr, expert_ids_ptr, numel, BLOCK_M, NAIVE)
            valid = slots < numel
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            offs_k = k_start + tl.arange(0, BLOCK_K)
            a_ptrs = h_ptr + offs_m[:, None].to(tl.int64) * stride_hm + offs_k[None, :]
            b_ptrs = w2_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
            n_ok = offs_n < N
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for kk in range(0, tl.cdiv(k_per_split, BLOCK_K)):
                if EVEN_K:
                    a = tl.load(a_ptrs)
                else:
                    k_ok = (offs_k < K - kk * BLOCK_K) & (offs_k < k_start + k_per_split - kk * BLOCK_K)
                    a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
                if TMA:
                    w = w2_desc.load([expert.to(tl.int32), pid_n * BLOCK_N, k_start + kk * BLOCK_K])
                    b = tl.trans(tl.reshape(w, (BLOCK_N, BLOCK_K)))
                elif EVEN_K and EVEN_N:
                    b = tl.load(b_ptrs)
                elif EVEN_K:
                    b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
                else:
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
# PERSISTENT[, TMA]); a GEMM 2 config is (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps,
# num_stages, SPLIT_K, PERSISTENT[, TMA]). PERSISTENT is programs per SM (0: one program per
# tile); TMA (default 0) loads the weight tiles through tensor descriptors where the weights'
# strides allow it (16-byte aligned), else the pointer loads run.
# CONFIGS[GPU name][(E, H, I)] = [(up to this many tokens, gemm1, gemm2), ...]. Each table is
# tuned on that GPU by `benchmarks/moe_gpu.py --tune`, which writes the block between the BEGIN
# and END lines (`--apply`); see docs/lab-05-gpu.md. A GPU or shape without a table runs GENERIC,
# and so does a GPU whose TUNED_ON says "untuned".
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

# Where no table was tuned (another GPU, another shape): by the load of an expert, T*k/E
# assignments on average, so a BLOCK_M fits the groups it tiles (a Poisson-sized group of ~128
# spills into a nearly empty second block of 128 about half the time; in blocks of 64 it wastes less).
GENERIC = [
    (2, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 128, 1, 4, 4, 2, 0)),
    (8, (16, 32, 256, 1, 4, 4, 0, 0), (16, 64, 128, 1, 4, 4, 1, 0)),
    (24, (32, 64, 128, 1, 4, 4, 0, 0), (32, 64, 128, 1, 4, 4, 1, 0)),
    (160, (64, 128, 64, 8, 4, 3, 0, 0), (64, 128, 64, 8, 4, 3, 1, 0)),
    (1 << 30, (128, 128, 64, 8, 8, 4, 0, 0), (128, 128, 64, 8, 8, 3, 1, 0)),
]
# The interpreter runs every program of a grid in turn in numpy: wide tiles are what make it fast
# (7x over 32-wide ones on the float16 case). BLOCK_K stays 64 so the float16 check's K = 2048
# takes 32 accumulation steps (a float16 accumulator then errs 1.6x past its bound).
INTERPRETER = ((16, 128, 64, 1, 4, 1, 0, 0), (16, 128, 64, 1, 4, 1, 1, 0))


@functools.lru_cache(maxsize=8)
def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def pick_config(
    num_tokens: int, num_experts: int, hidden: int, inter: int, device: str = "", top_k: int = 1
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The tuned table's row for this many tokens on this GPU and shape, else GENERIC's for the load."""
    if INTERPRET:
        return INTERPRETER
    tuned = CONFIGS.get(device, {}).get((num_experts, hidden, inter))
    count, table = (num_tokens, tuned) if tuned else (num_tokens * top_k / num_experts, GENERIC)
    for limit, c1, c2 in table:
        if count <= limit:
            return c1, c2
    raise AssertionError("unreachable: the last config has no limit")


def _grid(tiles: int, persistent: int, device: torch.device) -> int:
    if not persistent or device.type != "cuda":
        return tiles
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return min(tiles, sms * persistent)


def _weight_desc(w: torch.Tensor, block_n: int, block_k: int, wanted: bool):
    """A TMA descriptor of an (E, N, K) weight over (1, block_n, block_k) tiles, or None where TMA
    is not asked for, this Triton has no descriptors, or the strides are not 16-byte aligned."""
    if not wanted:
        return None
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return None
    if w.stride(-1) != 1 or w.data_ptr() % 16 or any(st * w.element_size() % 16 for st in w.stride()[:-1]):
        return None
    return TensorDescriptor(w, list(w.shape), list(w.stride()), [1, block_n, block_k])


# --- the layer ----------------------------------------------------------------------------------


def fused_moe(x, w1, w2, topk_weights, topk_ids, config=None):
    """sum_j w_j * (silu(x @ gate_e.T) * (x @ up_e.T)) @ w2[e].T for e = topk_ids[t, j], in x's dtype."""
    T, H = x.shape
    E, two_i, _ = w1.shape
    inter = two_i // 2
    top_k = topk_ids.shape[1]
    numel = T * top_k
    c1, c2 = config or pick_config(T, E, H, inter, device_name(x.device), top_k)
    bm = c1[0]
    assert c2[0] == bm, "both GEMMs walk the same aligned blocks"
    x = x.contiguous()
    naive = T == 1  # one token: its experts are distinct, each block is one assignment
    if naive:
        ids = topk_ids.reshape(-1)
        sorted_ids, expert_ids, total, blocks = ids, ids, ids, numel
    else:
        sorted_ids, expert_ids, total = moe_align_block_size(topk_ids, E, bm)
        blocks = expert_ids.numel()
    h = torch.empty((blocks * bm, inter), dtype=x.dtype, device=x.device)
    bn1, bk1 = c1[1], c1[2]
    desc1 = _weight_desc(w1, bn1, bk1, len(c1) > 8 and bool(c1[8]))
    tiles1 = blocks * triton.cdiv(inter, bn1)
    _gemm1_swiglu_kernel[(_grid(tiles1, c1[7], x.device),)](
        x, w1, w1 if desc1 is None else desc1, h, sorted_ids, expert_ids, total,
        numel, top_k, inter, H, blocks,
        x.stride(0), w1.stride(0), w1.stride(1), h.stride(0),
        BLOCK_M=bm, BLOCK_N=bn1, BLOCK_K=bk1, GROUP_M=c1[3],
        EVEN_K=H % bk1 == 0, EVEN_N=inter % bn1 == 0, INTERLEAVE=bool(c1[6]), PERSISTENT=bool(c1[7]),
        NAIVE=naive, TMA=desc1 is not None, num_warps=c1[4], num_stages=c1[5],
    )  # fmt: skip
    out = torch.zeros((T, H), dtype=torch.float32, device=x.device)
    bn2, bk2, split = c2[1], c2[2], c2[6]
    k_per_split = triton.cdiv(triton.cdiv(inter, split), bk2) * bk2
    split = triton.cdiv(inter, k_per_split)
    desc2 = _weight_desc(w2, bn2, bk2, len(c2) > 8 and bool(c2[8]))
    tiles2 = blocks * triton.cdiv(H, bn2)
    _gemm2_combine_kernel[(_grid(tiles2, c2[7], x.device), split)](
        h, w2, w2 if desc2 is None else desc2, out, sorted_ids, expert_ids, total, topk_weights.reshape(-1),
        numel, top_k, H, inter, blocks, k_per_split,
        h.stride(0), w2.stride(0), w2.stride(1), out.stride(0),
        BLOCK_M=bm, BLOCK_N=bn2, BLOCK_K=bk2, GROUP_M=c2[3],
        EVEN_K=inter % k_per_split == 0 and k_per_split % bk2 == 0, EVEN_N=H % bn2 == 0,
        PERSISTENT=bool(c2[7]), NAIVE=naive, TMA=desc2 is not None, num_warps=c2[4], num_stages=c2[5],
    )  # fmt: skip
    return out if x.dtype == torch.float32 else out.to(x.dtype)
