"""lab-05 as a student may hand it in: the honest solution's kernels and host code in a module of
their own (moe_kernels.py, which the test makes from the lab's solution), re-exported here. The
ghost replay switches off the kernels of every module loaded from the upload, so with them off
the answer is wrong: they do the work. The rule follows the re-export into moe_kernels.py and
finds no library GEMM."""
# lab: lab-05-fused-moe-kernel
# helper-from-solution: moe_kernels.py
# verdict: * passed
# verdict: fused-moe-matches-oracle-gpu skipped "needs a CUDA GPU"
# verdict: fused-moe-speed skipped "needs a CUDA GPU"
# verdict: triton-kernels-on-the-profile skipped "needs a CUDA GPU"
# max-score: 8
from moe_kernels import fused_moe, moe_align_block_size  # noqa: F401

EXERCISE = "lab-05-fused-moe-kernel"
