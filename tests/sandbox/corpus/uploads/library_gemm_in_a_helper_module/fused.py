"""lab-05's fused_moe with the expert GEMMs done by torch.matmul, hidden in a helper module of
the upload (moe_math.py): right answers, no kernel of its own. The rule reads every module the
upload imports, so no-library-gemm errors naming moe_math.py; the ghost replay finds the answer
still right with no kernels at all."""
# lab: lab-05-fused-moe-kernel
# verdict: * skipped "needs a CUDA GPU"
# verdict: align-layout error "defines no function"
# verdict: fused-moe-matches-oracle-fp32 passed
# verdict: fused-moe-matches-oracle-fp16 passed
# verdict: triton-kernels-do-the-work failed "still returns the right answer"
# verdict: no-library-gemm error "calls torch.matmul"
# max-score: 4
import torch

from moe_math import expert_mlp

EXERCISE = "lab-05-fused-moe-kernel"


def fused_moe(x, w1, w2, topk_weights, topk_ids):
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        out.index_add_(0, tok, expert_mlp(x[tok].float(), w1[e].float(), w2[e].float()) * topk_weights[tok, slot, None])
    return out.to(x.dtype)
