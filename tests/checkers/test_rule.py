"""The rule checker: static inspection finds whole-operand products and forbidden calls."""

from __future__ import annotations

import textwrap

import pytest

from grader.checkers.rule import RuleOptions, analyse

TILING = RuleOptions(kind="rule", title="t", function="tiled_matmul", points=1, whole_operands=["a", "b"])
NO_TORCH = RuleOptions(
    kind="rule", title="t", function="fused_moe", points=1,
    forbid_calls=["torch.matmul", "torch.mm", "torch.nn.functional.linear", ".matmul", "@"],
)  # fmt: skip


def violations(source: str, rules: RuleOptions) -> list[str]:
    return analyse(textwrap.dedent(source), rules)


@pytest.mark.parametrize(
    "body",
    [
        "return a @ b, 0",
        "return np.matmul(a, b), 0",
        "import numpy\n    return numpy.dot(a, b), 0",
        "A = np.asarray(a)\n    B = b.copy()\n    return A @ B, 0",
        "return a[:, :] @ b[...], 0",
        "return a.dot(b), 0",
        "return np.einsum('ik,kj->ij', a, b), 0",
        "return getattr(np, 'matmul')(a, b), 0",
        "return helper(a, b), 0",
        "return helper(x=a, y=b), 0",
    ],
)
def test_whole_products_are_found(body: str) -> None:
    body = body.replace("\n    ", "\n        ")
    source = f"""
    import numpy as np

    def helper(x, y):
        return x @ y

    def tiled_matmul(a, b, tile_m, tile_n, tile_k):
        {body}
    """
    found = violations(source, TILING)
    assert found and "tiled_matmul" in found[0] and "whole operands" in found[0]


def test_tiled_products_are_fine() -> None:
    source = """
    import numpy as np

    def tiled_matmul(a, b, tile_m, tile_n, tile_k):
        M, K = a.shape
        c = np.zeros((M, b.shape[1]))
        for i in range(0, M, tile_m):
            for j in range(0, b.shape[1], tile_n):
                for k in range(0, K, tile_k):
                    c[i:i + tile_m, j:j + tile_n] += a[i:i + tile_m, k:k + tile_k] @ b[k:k + tile_k, j:j + tile_n]
        return c, 0
    """
    assert violations(source, TILING) == []


def test_forbidden_calls_follow_helpers_and_aliases_but_skip_triton_kernels() -> None:
    source = """
    import torch
    import torch.nn.functional as F
    import triton
    from torch import mm as multiply

    @triton.jit
    def kernel(x):
        return x @ x

    def expert(x, w):
        return F.linear(x, w)

    def fused_moe(x, w1, w2, topk_weights, topk_ids):
        kernel[(1,)](x)
        h = expert(x, w1)
        y = multiply(h, w2)
        return h.matmul(w2) + x @ w2
    """
    found = violations(source, NO_TORCH)
    text = "\n".join(found)
    assert "fused_moe -> expert, line 12: calls torch.nn.functional.linear" in text
    assert "calls torch.mm" in text and "calls the method .matmul()" in text and "uses the @ operator" in text
    assert "kernel" not in text


def test_missing_function_means_nothing_to_check() -> None:
    assert violations("def other():\n    pass\n", TILING) == []
