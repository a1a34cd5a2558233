"""lab-06: a block-scaled FP8 fused MoE in Triton (DeepSeek-V3's format).

Implement the two functions below with your own Triton kernels (@triton.jit); read README.md
first. Start from your lab-05 kernel: the routing, the align and the layout of w1 (gate rows,
then up rows) are the same. torch may allocate buffers and launch kernels; the matrix products
must be tl.dot calls on e4m3 tiles inside your kernels. On a laptop the grader runs your kernels
in Triton's CPU interpreter (TRITON_INTERPRET=1) at small shapes; on the course's GPU it grades
bf16 activations at DeepSeek-V3's shape, checks the compiled code for fp8 tensor-core
instructions, times you against the reference on that GPU, and profiles you.
"""

import torch  # noqa: F401
import triton  # noqa: F401
import triton.language as tl  # noqa: F401

EXERCISE = "lab-06-fp8-block-scaled-moe"
GROUP = 128  # activation groups are 1 x 128, weight blocks 128 x 128
FP8_MAX = 448.0  # the largest e4m3fn value
AMAX_MIN = 1e-4  # amax is clamped to at least this before it becomes a scale


def per_token_group_quant_fp8(x):
    """Quantise x (M, K) (float32 or bfloat16) per row in groups of 128 columns.

    For each row and each group (the last one may be shorter than 128):
        scale = max(amax, 1e-4) / 448        (amax: the largest |value| in the group)
        value = x / scale, rounded to the nearest e4m3 value (ties to even)
    Returns (x_q, x_s): x_q (M, K) torch.float8_e4m3fn, x_s (M, ceil(K/128)) float32.
    """
    raise NotImplementedError("per_token_group_quant_fp8")


def fused_moe_fp8(x, w1, w1_scale, w2, w2_scale, topk_weights, topk_ids):
    """The MoE expert layer on block-scaled e4m3 weights. x (T, H) float32 or bfloat16;
    w1 (E, 2I, H) e4m3, gate rows then up rows, with w1_scale (E, ceil(2I/128), ceil(H/128))
    float32; w2 (E, H, I) e4m3 with w2_scale (E, ceil(H/128), ceil(I/128)); the dequantised
    weight is w[e, n, k] * scale[e, n // 128, k // 128]. topk_weights (T, k) float32,
    topk_ids (T, k) int32 or int64. Returns (T, H) in x's dtype:

        out[t] = sum_j topk_weights[t, j] * (silu(xq[t] @ gate_e.T) * (xq[t] @ up_e.T))q @ w2[e].T

    where xq is x quantised per token in groups of 128 (per_token_group_quant_fp8) and (...)q is
    the SwiGLU output quantised the same way, per (token, expert) row, before GEMM 2. x and the
    scale tensors may be strided: use their strides.
    """
    raise NotImplementedError("fused_moe_fp8")
