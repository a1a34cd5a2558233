"""lab-04's contract, as pytest tests: each test is one of the grader's checks.

    pytest exercises/phase-07-gemm-and-moe-kernels/lab-04-expert-load-balance  # the solution
    LAB_IMPL=starter pytest exercises/phase-07-gemm-and-moe-kernels/lab-04-expert-load-balance
"""

import pytest

from grader.testing import LabRun

LAB = LabRun(__file__)


@pytest.mark.parametrize("check_id", LAB.check_ids(gpu=False))
def test_check(check_id):
    LAB.assert_passed(check_id)
