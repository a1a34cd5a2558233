"""lab-05's contract, as pytest tests: each test is one of the grader's checks.

    pytest exercises/phase-07-gemm-and-moe-kernels/lab-05-fused-moe-kernel          # the solution
    LAB_IMPL=starter pytest exercises/phase-07-gemm-and-moe-kernels/lab-05-fused-moe-kernel

CPU checks run the Triton kernels in the interpreter; GPU checks are marked `gpu` and skip
without CUDA.
"""

import pytest

from grader.testing import LabRun

LAB = LabRun(__file__)


@pytest.mark.parametrize("check_id", LAB.check_ids(gpu=False))
def test_check(check_id):
    LAB.assert_passed(check_id)


@pytest.mark.gpu
@pytest.mark.parametrize("check_id", LAB.check_ids(gpu=True))
def test_gpu_check(check_id):
    LAB.assert_passed(check_id)
