"""Wrong: the expert GEMMs are torch.matmul calls per expert (after a Triton align); right
answers, but not the kernel the lab asks for, and cuBLAS carries the time on the profile."""
# expect: no-library-gemm error
# expect: triton-kernels-on-the-profile

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

EXERCISE = "lab-05-fused-moe-kernel"


@triton.jit
def _count_kernel(topk_ids_ptr, counts_ptr, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=valid, other=0).to(tl.int32)
    tl.atomic_add(counts_ptr + ids, 1, mask=valid)


def moe_align_block_size(topk_ids, num_experts, block_m):
    numel = topk_ids.numel()
    counts = torch.zeros(num_experts, dtype=torch.int32, device=topk_ids.device)
    _count_kernel[(triton.cdiv(numel, 256),)](topk_ids.reshape(-1), counts, numel, BLOCK=256)
    padded = (counts + block_m - 1) // block_m * block_m
    flat = topk_ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    total = int(padded.sum())
    sorted_ids = torch.full((total,), numel, dtype=torch.int32, device=topk_ids.device)
    starts = torch.cumsum(padded, 0) - padded
    ranks = torch.arange(numel, device=flat.device) - (torch.cumsum(counts, 0) - counts)[flat[order]]
    sorted_ids[(starts[flat[order]] + ranks).long()] = order.to(torch.int32)
    expert_ids = torch.repeat_interleave(torch.arange(num_experts, device=flat.device, dtype=torch.int32), (padded // block_m).long())
    return sorted_ids, expert_ids, total


def fused_moe(x, w1, w2, topk_weights, topk_ids):
    inter = w2.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        gate_up = torch.matmul(x[tok].float(), w1[e].float().T)
        h = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        out.index_add_(0, tok, torch.matmul(h, w2[e].float().T) * topk_weights[tok, slot, None])
    return out.to(x.dtype)
