"""The compiled-code check without a GPU: which matrix instructions pass, which fail, what the
student reads, and the worker's reading of a Triton kernel's PTX."""

from __future__ import annotations

import types
from typing import Any

import pytest

from grader.checkers.compiled import CompiledCodeChecker, CompiledCodeOptions
from grader.lab import Case
from grader.results import Status
from grader.sandbox.boot import worker

FP8 = ["\\.e4m3\\.e4m3", "^Q[G]?MMA\\..*E4M3"]
UPCAST = ["\\.(bf16|f16|tf32)\\.(bf16|f16|tf32)"]


def verdict(rows: list[dict[str, Any]]) -> Any:
    check = CompiledCodeOptions(kind="compiled-code", title="t", function="fused_moe_fp8", points=1, cases="c", require=FP8, forbid=UPCAST)
    case = Case("c", 0, 1, {"T": 256}, {})
    ctx = types.SimpleNamespace(submission=types.SimpleNamespace(code=lambda function, inputs, limit: rows), cases=lambda *a: [case])
    return CompiledCodeChecker().run("fp8-tensor-cores", check, ctx)


def row(kernel: str, ptx: list[str], sass: list[str] | None = None) -> dict[str, Any]:
    return {"kernel": kernel, "ptx_mma": ptx, "sass_mma": sass or [], "sass": sass is not None}


def test_fp8_wgmma_or_mma_passes() -> None:
    for ptx in (["wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3"], ["mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"]):
        ok = verdict([row("_gemm1_kernel", ptx), row("_quant_kernel", [])])
        assert ok.status is Status.passed and "_gemm1_kernel: " + ptx[0] in ok.message
        assert ok.table[1] == {"kernel": "_quant_kernel", "ptx_mma": "none", "sass_mma": "no SASS here"}
    sass_only = verdict([row("_gemm2_kernel", [], ["QGMMA.64x128x32.F32.E4M3.E4M3"])])
    assert sass_only.status is Status.passed


def test_an_upcast_anywhere_or_no_fp8_mma_fails() -> None:
    fp8 = row("_gemm1_kernel", ["wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3"])
    upcast = row("_gemm2_kernel", ["wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16"])
    both = verdict([fp8, upcast])
    assert both.status is Status.failed and "forbidden" in both.message and "_gemm2_kernel" in both.message
    bf16 = verdict([row("_gemm1_kernel", ["mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"])])
    assert bf16.status is Status.failed
    fma = verdict([row("_gemm1_kernel", [])])
    assert fma.status is Status.failed and "none of the submission's compiled kernels (_gemm1_kernel)" in fma.message
    nothing = verdict([])
    assert nothing.status is Status.failed and "no compiled Triton kernel" in nothing.message


def test_patterns_are_checked_when_the_manifest_loads() -> None:
    with pytest.raises(ValueError, match="regular expressions"):
        CompiledCodeOptions(kind="compiled-code", title="t", function="f", points=1, cases="c", require=["(unclosed"])


PTX = """
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%f1, %f2}, %rd1, %rd2, p, 1, 1;
    wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%f3, %f4}, %rd3, %rd4, p, 1, 1;
    wgmma.commit_group.sync.aligned;
    mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f5}, {%r1}, {%r2}, {%f6};
"""
SASS = """
        /*0a30*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR4], R24, gsb0 ;
        /*0a40*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
"""


def test_the_worker_reads_a_compiled_kernels_matrix_instructions() -> None:
    module = types.ModuleType("submission")

    def _gemm(x):  # the Python function a JITFunction wraps
        return x

    _gemm.__module__ = "submission"
    kernel = types.SimpleNamespace(asm={"ptx": PTX, "sass": SASS})
    jit = types.SimpleNamespace(fn=_gemm, device_caches={0: ({"key": kernel}, {}, None, None, None)})
    module._gemm = jit
    module.helper = types.SimpleNamespace(fn=lambda: None, device_caches={})  # from another module: not the submission's
    rows = worker.compiled_code({"submission": module})
    assert worker.jit_functions({"submission": module, "helpers": module}) == [jit]  # each kernel once
    assert rows == [{
        "kernel": "_gemm",
        "ptx_mma": ["mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3"],
        "sass_mma": ["HMMA.16816.F32", "QGMMA.64x128x32.F32.E4M3.E4M3"],
        "sass": True,
    }]  # fmt: skip
