"""The datasheet table's FP8 rates: present where the GPU has FP8 tensor cores, absent where not."""

from __future__ import annotations

import pytest

from grader import hardware
from grader.errors import InfrastructureError


def test_fp8_rates_are_dense_and_twice_bf16_where_fp8_tensor_cores_exist() -> None:
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA H100 PCIe", "NVIDIA L40S", "NVIDIA B200"):
        rates = hardware.DATASHEET[name].rates
        assert 1.9 < rates["float8_e4m3fn"] / rates["bfloat16"] < 2.1, name
    a100 = hardware.DATASHEET["NVIDIA A100-SXM4-80GB"]
    assert "float8_e4m3fn" not in a100.rates
    with pytest.raises(InfrastructureError, match="no float8_e4m3fn matrix rate"):
        a100.roofline_us(1e12, 1e9, "float8_e4m3fn")
    h100 = hardware.DATASHEET["NVIDIA H100 80GB HBM3"]
    # DeepSeek-V3 decode at one token: 8 experts' e4m3 weights, 352 MB, against 3.35 TB/s
    assert 100 < h100.roofline_us(6.0 * 8 * 7168 * 2048, 8 * 3 * 7168 * 2048, "float8_e4m3fn") < 110
