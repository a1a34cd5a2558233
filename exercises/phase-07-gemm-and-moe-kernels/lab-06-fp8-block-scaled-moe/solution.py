"""lab-06 reference solution: a block-scaled FP8 fused MoE in Triton (the DeepSeek-V3 format).

Weights are e4m3 with one float32 scale per 128x128 block; activations are quantised on the fly
to e4m3 with one scale per token per 128 values (1x128 groups). Four phases:

1. ``per_token_group_quant_fp8(x)``: one program per (block of rows, group of 128 columns):
   amax of each row's group, scale = max(amax, 1e-4) / 448, values x / scale rounded to e4m3.
2. Align: the T*k assignments grouped by expert, each group padded to BLOCK_M with the sentinel
   T*k (one Triton program: histogram, padded prefix sum, block owners, sentinel fill, scatter).
3. GEMM 1 with SwiGLU and requantisation in its epilogue: a program owns BLOCK_M sorted rows
   and one 128-wide group of the intermediate width. Every 128-deep step of K is a fresh fp8
   ``tl.dot``, scaled by the row's activation scale and the column's weight scale for that K
   block and added to a float32 accumulator (the scale changes every 128 along K, and a fresh
   dot per block also keeps Hopper's reduced-precision fp8 accumulation to 128 products). The
   epilogue applies silu(gate) * up and quantises each row's 128 outputs to e4m3 with their
   own scale: exactly the group GEMM 2 needs. Padding rows are never stored.
4. GEMM 2 with the routing weight and the combine: the same per-K-block scaling with the h
   scales and w2's block scales; each valid row times its routing weight is added atomically
   into a float32 output at its token.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

EXERCISE = "lab-06-fp8-block-scaled-moe"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
GROUP = 128
FP8_MAX = 448.0
AMAX_MIN = 1e-4

# --- phase 1: per-token-group quantisation ---------------------------------------------------------


@triton.jit
def _quant_group(v, FP8_MAX: tl.constexpr, AMAX_MIN: tl.constexpr):
    """e4m3 values and the scale of each row of a [rows, 128] tile (masked elements are 0)."""
    amax = tl.maximum(tl.max(tl.abs(v), 1), AMAX_MIN)
    # div_rn: a plain "/" compiles to an approximate division on a GPU; rounding it exactly
    # keeps the scales equal to torch's bit for bit.
    scale = tl.div_rn(amax, FP8_MAX)
    q = tl.clamp(tl.div_rn(v, scale[:, None]), -FP8_MAX, FP8_MAX)
    return q.to(tl.float8e4nv), scale


@triton.jit
def _quant_kernel(
    x_ptr, q_ptr, s_ptr, M, K,
    stride_xm, stride_xk, stride_qm, stride_sm,
    BLOCK_M: tl.constexpr, GROUP: tl.constexpr, FP8_MAX: tl.constexpr, AMAX_MIN: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * GROUP + tl.arange(0, GROUP)
    ok = (rows[:, None] < M) & (cols[None, :] < K)
    rows64 = rows.to(tl.int64)
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :] * stride_xk, mask=ok, other=0.0).to(tl.float32)
    q, scale = _quant_group(x, FP8_MAX, AMAX_MIN)
    tl.store(q_ptr + rows64[:, None] * stride_qm + cols[None, :], q, mask=ok)
    tl.store(s_ptr + rows64 * stride_sm + tl.program_id(1), scale, mask=rows < M)


def per_token_group_quant_fp8(x: torch.Tensor):
    """x (M, K) -> (e4m3 (M, K), float32 scales (M, ceil(K/128))): per row and 128 columns,
    scale = max(amax, 1e-4) / 448 and values x / scale rounded to nearest even."""
    M, K = x.shape
    groups = triton.cdiv(K, GROUP)
    q = torch.empty((M, K), dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty((M, groups), dtype=torch.float32, device=x.device)
    block_m = 16 if INTERPRET else 4
    _quant_kernel[(triton.cdiv(M, block_m), groups)](
        x, q, s, M, K, x.stride(0), x.stride(1), q.stride(0), s.stride(0),
        BLOCK_M=block_m, GROUP=GROUP, FP8_MAX=FP8_MAX, AMAX_MIN=AMAX_MIN,
    )  # fmt: skip
    return q, s


# --- phase 2: align ------------------------------------------------------------------------------


@triton.jit
def _align_kernel(
    ids_ptr, sorted_ptr, expert_ids_ptr, total_ptr, cursor_ptr,
    numel, num_experts, sorted_len, num_blocks,
    BLOCK_M: tl.constexpr, BINS: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """One program: per-expert counts, padded group starts, block owners, sentinel, scatter."""
    bins = tl.arange(0, BINS)
    counts = tl.zeros([BINS], dtype=tl.int32)
    for start in range(0, numel, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        ids = tl.load(ids_ptr + offs, mask=offs < numel, other=BINS - 1).to(tl.int32)
        counts += tl.histogram(ids, BINS)  # bin BINS-1 >= num_experts takes the masked lanes
    counts = tl.where(bins < num_experts, counts, 0)
    sizes = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    starts = tl.cumsum(sizes, 0) - sizes
    tl.store(total_ptr, tl.sum(sizes, 0))
    tl.store(cursor_ptr + bins, starts, mask=bins < num_experts)
    for start in range(0, num_blocks, CHUNK):
        blk = start + tl.arange(0, CHUNK)
        # the owner of block b is the last expert with a non-empty group starting at or before it
        begins = (starts[None, :] <= blk[:, None] * BLOCK_M) & (sizes[None, :] > 0)
        owner = tl.max(tl.where(begins, bins[None, :], 0), 1)
        tl.store(expert_ids_ptr + blk, owner, mask=blk < num_blocks)
    for start in range(0, sorted_len, CHUNK):
        pos = start + tl.arange(0, CHUNK)
        tl.store(sorted_ptr + pos, tl.full([CHUNK], 0, tl.int32) + numel, mask=pos < sorted_len)
    tl.debug_barrier()
    for start in range(0, numel, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        ok = offs < numel
        ids = tl.load(ids_ptr + offs, mask=ok, other=0).to(tl.int32)
        slot = tl.atomic_add(cursor_ptr + ids, 1, mask=ok)
        tl.store(sorted_ptr + slot, offs, mask=ok)


def align(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    """Sorted assignment ids (each expert's group padded to block_m with T*k), each block's
    expert, and the padded length as a one-element tensor (no host synchronisation)."""
    numel = topk_ids.numel()
    blocks = min(num_experts, numel) + triton.cdiv(numel, block_m)
    device = topk_ids.device
    sorted_ids = torch.empty(blocks * block_m, dtype=torch.int32, device=device)
    expert_ids = torch.empty(blocks, dtype=torch.int32, device=device)
    total = torch.empty(1, dtype=torch.int32, device=device)
    cursor = torch.empty(num_experts, dtype=torch.int32, device=device)
    _align_kernel[(1,)](
        topk_ids.reshape(-1), sorted_ids, expert_ids, total, cursor,
        numel, num_experts, blocks * block_m, blocks,
        BLOCK_M=block_m, BINS=triton.next_power_of_2(num_experts + 1), CHUNK=256 if INTERPRET else 1024,
    )  # fmt: skip
    return sorted_ids, expert_ids, total


# --- phases 3 and 4: the expert GEMMs ------------------------------------------------------------


@triton.jit
def _tile(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped order: GROUP_M row-blocks take turns on each weight column tile while it is in L2."""
    width = GROUP_M * num_pid_n
    first = (pid // width) * GROUP_M
    rows = tl.minimum(num_pid_m - first, GROUP_M)
    return first + (pid % width) % rows, (pid % width) // rows


@triton.jit
def _block(pid_m, sorted_ptr, expert_ids_ptr, numel, BLOCK_M: tl.constexpr):
    """Block pid_m of the sorted assignments: its rows, their slots (t*k + j), which of them are
    real (padding holds the sentinel T*k) and the block's expert (int64: it scales a stride)."""
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.load(sorted_ptr + rows)
    return rows, slots, slots < numel, tl.load(expert_ids_ptr + pid_m).to(tl.int64)


@triton.jit
def _gemm1_kernel(
    xq_ptr, xs_ptr, w_ptr, ws_ptr, hq_ptr, hs_ptr, sorted_ptr, expert_ids_ptr, total_ptr,
    numel, top_k, I, H, num_pid_m,
    stride_xq, stride_xs, stride_we, stride_wn, stride_wse, stride_wsn, stride_wsk, stride_hq, stride_hs,
    BLOCK_M: tl.constexpr, GROUP: tl.constexpr, GROUP_M: tl.constexpr,
    FP8_MAX: tl.constexpr, AMAX_MIN: tl.constexpr,
):  # fmt: skip
    """hq, hs = quant(silu(x @ gate.T) * (x @ up.T)) for BLOCK_M sorted rows and one group of I."""
    pid_m, pid_n = _tile(tl.program_id(0), num_pid_m, tl.cdiv(I, GROUP), GROUP_M)
    if pid_m * BLOCK_M < tl.load(total_ptr):
        rows, slots, valid, expert = _block(pid_m, sorted_ptr, expert_ids_ptr, numel, BLOCK_M)
        tokens = tl.where(valid, slots // top_k, 0).to(tl.int64)
        offs_n = pid_n * GROUP + tl.arange(0, GROUP)
        n_ok = offs_n < I
        up_n = I + offs_n  # up rows follow the I gate rows: its 128-row scale blocks need not align
        offs_k = tl.arange(0, GROUP)
        a_ptrs = xq_ptr + tokens[:, None] * stride_xq + offs_k[None, :]
        g_ptrs = w_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
        u_ptrs = w_ptr + expert * stride_we + up_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
        gs_ptrs = ws_ptr + expert * stride_wse + (offs_n // GROUP) * stride_wsn
        us_ptrs = ws_ptr + expert * stride_wse + (up_n // GROUP) * stride_wsn
        gate = tl.zeros([BLOCK_M, GROUP], dtype=tl.float32)
        up = tl.zeros([BLOCK_M, GROUP], dtype=tl.float32)
        for kb in range(0, tl.cdiv(H, GROUP)):
            k_ok = offs_k < H - kb * GROUP
            a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
            a_s = tl.load(xs_ptr + tokens * stride_xs + kb, mask=valid, other=0.0)
            g = tl.load(g_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            u = tl.load(u_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            g_s = tl.load(gs_ptrs + kb * stride_wsk, mask=n_ok, other=0.0)
            u_s = tl.load(us_ptrs + kb * stride_wsk, mask=n_ok, other=0.0)
            # a fresh dot per 128-deep block, scaled and added in float32
            gate += tl.dot(a, g) * a_s[:, None] * g_s[None, :]
            up += tl.dot(a, u) * a_s[:, None] * u_s[None, :]
            a_ptrs += GROUP
            g_ptrs += GROUP
            u_ptrs += GROUP
        h = gate / (1.0 + tl.exp(-gate)) * up  # masked columns are 0 and leave the amax alone
        q, scale = _quant_group(h, FP8_MAX, AMAX_MIN)
        rows64 = rows.to(tl.int64)
        tl.store(hq_ptr + rows64[:, None] * stride_hq + offs_n[None, :], q, mask=valid[:, None] & n_ok[None, :])
        tl.store(hs_ptr + rows64 * stride_hs + pid_n, scale, mask=valid)


@triton.jit
def _gemm2_kernel(
    hq_ptr, hs_ptr, w_ptr, ws_ptr, out_ptr, sorted_ptr, expert_ids_ptr, total_ptr, weights_ptr,
    numel, top_k, H, I, num_pid_m,
    stride_hq, stride_hs, stride_we, stride_wn, stride_wse, stride_wsn, stride_wsk, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """out[token] += routing weight * (hq * hs) @ (w2 * w2s).T for BLOCK_M sorted rows."""
    pid_m, pid_n = _tile(tl.program_id(0), num_pid_m, tl.cdiv(H, BLOCK_N), GROUP_M)
    if pid_m * BLOCK_M < tl.load(total_ptr):
        rows, slots, valid, expert = _block(pid_m, sorted_ptr, expert_ids_ptr, numel, BLOCK_M)
        rows64 = rows.to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < H
        offs_k = tl.arange(0, GROUP)
        a_ptrs = hq_ptr + rows64[:, None] * stride_hq + offs_k[None, :]
        b_ptrs = w_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
        bs_ptrs = ws_ptr + expert * stride_wse + (offs_n // GROUP) * stride_wsn
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        # Every row of the block is read, padding rows too (GEMM 1 never wrote them: whatever the
        # buffer held, NaN on the grader's CPU); the combine's row mask keeps them out.
        for kb in range(0, tl.cdiv(I, GROUP)):
            k_ok = offs_k < I - kb * GROUP
            a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
            a_s = tl.load(hs_ptr + rows64 * stride_hs + kb)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            b_s = tl.load(bs_ptrs + kb * stride_wsk, mask=n_ok, other=0.0)
            acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
            a_ptrs += GROUP
            b_ptrs += GROUP
        weight = tl.load(weights_ptr + slots, mask=valid, other=0.0).to(tl.float32)
        tokens = tl.where(valid, slots // top_k, 0).to(tl.int64)
        out_ptrs = out_ptr + tokens[:, None] * stride_om + offs_n[None, :]
        tl.atomic_add(out_ptrs, acc * weight[:, None], mask=valid[:, None] & n_ok[None, :])


# --- configuration ----------------------------------------------------------------------------------

# (rows per expert up to, (BLOCK_M, GROUP_M, warps, stages) of GEMM 1, (BLOCK_M, BLOCK_N, GROUP_M,
# warps, stages) of GEMM 2). Untuned: written from lab-05's H100 table, not measured
# for FP8 (benchmarks/lab06_gpu.py measures the reference against lab-05's on a GPU).
GENERIC = [
    (24, (16, 1, 4, 4), (16, 128, 1, 4, 4)),
    (48, (32, 1, 4, 4), (32, 128, 1, 4, 4)),
    (96, (64, 8, 4, 3), (64, 128, 8, 4, 3)),
    (1 << 30, (128, 8, 8, 3), (128, 128, 8, 8, 3)),
]
INTERPRETER = ((16, 1, 4, 1), (16, 256, 1, 4, 1))  # few, wide programs: the interpreter pays per op


def pick_config(rows_per_expert: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if INTERPRET:
        return INTERPRETER
    return next((c1, c2) for limit, c1, c2 in GENERIC if rows_per_expert <= limit)


# --- the layer ----------------------------------------------------------------------------------


def fused_moe_fp8(x, w1, w1_scale, w2, w2_scale, topk_weights, topk_ids):
    """sum_j w_j * (silu(x @ gate_e.T) * (x @ up_e.T)) @ w2[e].T with block-scaled e4m3 weights and
    activations quantised per token in groups of 128 (again after SwiGLU); in x's dtype."""
    T, H = x.shape
    E, two_i, _ = w1.shape
    inter = two_i // 2
    top_k = topk_ids.shape[1]
    numel = T * top_k
    c1, c2 = pick_config(numel / E)
    bm = c1[0]
    xq, xs = per_token_group_quant_fp8(x)
    sorted_ids, expert_ids, total = align(topk_ids, E, bm)
    blocks = expert_ids.numel()
    i_groups = triton.cdiv(inter, GROUP)
    hq = torch.empty((blocks * bm, inter), dtype=torch.float8_e4m3fn, device=x.device)
    hs = torch.empty((blocks * bm, i_groups), dtype=torch.float32, device=x.device)
    _gemm1_kernel[(blocks * i_groups,)](
        xq, xs, w1, w1_scale, hq, hs, sorted_ids, expert_ids, total,
        numel, top_k, inter, H, blocks,
        xq.stride(0), xs.stride(0), w1.stride(0), w1.stride(1),
        w1_scale.stride(0), w1_scale.stride(1), w1_scale.stride(2), hq.stride(0), hs.stride(0),
        BLOCK_M=bm, GROUP=GROUP, GROUP_M=c1[1], FP8_MAX=FP8_MAX, AMAX_MIN=AMAX_MIN,
        num_warps=c1[2], num_stages=c1[3],
    )  # fmt: skip
    out = torch.zeros((T, H), dtype=torch.float32, device=x.device)
    bn = c2[1]
    _gemm2_kernel[(blocks * triton.cdiv(H, bn),)](
        hq, hs, w2, w2_scale, out, sorted_ids, expert_ids, total, topk_weights.reshape(-1),
        numel, top_k, H, inter, blocks,
        hq.stride(0), hs.stride(0), w2.stride(0), w2.stride(1),
        w2_scale.stride(0), w2_scale.stride(1), w2_scale.stride(2), out.stride(0),
        BLOCK_M=bm, BLOCK_N=bn, GROUP=GROUP, GROUP_M=c2[2], num_warps=c2[3], num_stages=c2[4],
    )  # fmt: skip
    return out if x.dtype == torch.float32 else out.to(x.dtype)
