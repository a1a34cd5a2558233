"""lab-05: a fused MoE expert computation in Triton.

Implement the two functions below with your own Triton kernels (@triton.jit); read README.md
first. torch may allocate buffers and launch kernels; the expert matrix products must be
tl.dot calls inside your kernels. On a laptop the grader runs your kernels in Triton's CPU
interpreter (TRITON_INTERPRET=1) at small float32/float16 shapes; on the course's GPU it grades
bf16 at Mixtral- and DeepSeek-V3-like shapes, times you against the reference on that GPU, and
profiles you.
"""

import torch  # noqa: F401
import triton  # noqa: F401
import triton.language as tl  # noqa: F401

EXERCISE = "lab-05-fused-moe-kernel"


def moe_align_block_size(topk_ids, num_experts, block_m):
    """Group the T*k assignments by expert, each group padded to a multiple of block_m.

    topk_ids: (T, k) int32 or int64 tensor (T may be 1 with k > 1; some experts may get no
    token); block_m is one of 16, 32, 64, 128, 256. Returns
      sorted_ids (int32): flat assignment indices (t*k + j) grouped by expert in ascending expert
        order, each expert's group padded with the sentinel T*k up to a multiple of block_m;
      expert_ids (int32): expert_ids[b] is the expert of block b (block_m entries of sorted_ids);
      num_tokens_post_padded: the padded length, an int or a one-element int32 tensor (a tensor
        needs no host synchronisation); only the first num_tokens_post_padded entries are read.
    """
    raise NotImplementedError("moe_align_block_size")


def fused_moe(x, w1, w2, topk_weights, topk_ids):
    """The MoE expert layer: x (T, H); w1 (E, 2I, H), gate rows then up rows; w2 (E, H, I);
    topk_weights (T, k) float32; topk_ids (T, k) int32 or int64. Returns (T, H) in x's dtype:

        out[t] = sum_j topk_weights[t, j] * (silu(x[t] @ gate_e.T) * (x[t] @ up_e.T)) @ w2[e].T,
        e = topk_ids[t, j]

    Suggested phases: align (above), a GEMM kernel for gate and up with SwiGLU in its epilogue,
    a GEMM kernel for w2 with the routing weight in its epilogue and the sum over k.
    """
    raise NotImplementedError("fused_moe")
