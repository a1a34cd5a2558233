"""Wrong: a Triton kernel is launched for show (it copies x), while torch.einsum does the
expert GEMMs. With the kernel switched off the answer is still right, and the profile shows
library GEMM kernels carrying the time."""
# expect: triton-kernels-do-the-work
# expect: triton-kernels-on-the-profile

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

EXERCISE = "lab-05-fused-moe-kernel"


@triton.jit
def _copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=offs < n), mask=offs < n)


def moe_align_block_size(topk_ids, num_experts, block_m):
    flat = topk_ids.reshape(-1).long()
    numel = flat.numel()
    counts = torch.bincount(flat, minlength=num_experts)
    padded = (counts + block_m - 1) // block_m * block_m
    order = torch.argsort(flat, stable=True)
    sorted_ids = torch.full((int(padded.sum()),), numel, dtype=torch.int32, device=flat.device)
    starts = torch.cumsum(padded, 0) - padded
    ranks = torch.arange(numel, device=flat.device) - (torch.cumsum(counts, 0) - counts)[flat[order]]
    sorted_ids[(starts[flat[order]] + ranks).long()] = order.to(torch.int32)
    expert_ids = torch.repeat_interleave(torch.arange(num_experts, device=flat.device, dtype=torch.int32), padded // block_m)
    return sorted_ids, expert_ids, int(padded.sum())


def fused_moe(x, w1, w2, topk_weights, topk_ids):
    staged = torch.empty_like(x)
    _copy_kernel[(triton.cdiv(x.numel(), 1024),)](x, staged, x.numel(), BLOCK=1024)
    inter = w2.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        gate_up = torch.einsum("th,nh->tn", x[tok].float(), w1[e].float())
        h = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        y = torch.einsum("ti,hi->th", h, w2[e].float())
        out.index_add_(0, tok, y * topk_weights[tok, slot, None])
    return out.to(x.dtype)
