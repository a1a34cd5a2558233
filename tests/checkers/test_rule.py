"""The rule checker: static inspection finds whole-operand products and forbidden calls."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import tomllib

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


HELPER_MATH = """
import torch

def grouped_gemm(a, b):
    return torch.matmul(a, b)

def unused_reference(a, b):
    return torch.mm(a, b)
"""


@pytest.mark.parametrize(
    ("main", "helpers"),
    [
        ("from moe_math import grouped_gemm\n\ndef fused_moe(x, w1, w2, tw, ti):\n    return grouped_gemm(x, w1)", {"moe_math.py": HELPER_MATH}),
        ("import moe_math as mm\n\ndef fused_moe(x, w1, w2, tw, ti):\n    return mm.grouped_gemm(x, w1)", {"moe_math.py": HELPER_MATH}),
        ("from moe_math import *\n\ndef fused_moe(x, w1, w2, tw, ti):\n    return grouped_gemm(x, w1)", {"moe_math.py": HELPER_MATH}),
        ("from pkg import fused_moe", {"pkg/__init__.py": "from .layer import fused_moe", "pkg/layer.py": "from .math import *\n\ndef fused_moe(x, w1, w2, tw, ti):\n    return grouped_gemm(x, w1)", "pkg/math.py": HELPER_MATH}),
        ("from moe_math import grouped_gemm as fused_moe", {"moe_math.py": HELPER_MATH}),
    ],
    ids=["from-import", "module-alias", "star", "package-re-export", "the-function-itself"],
)
def test_forbidden_calls_are_followed_into_the_uploads_other_modules(main: str, helpers: dict[str, str]) -> None:
    found = analyse(main, NO_TORCH, helpers)
    assert len(found) == 1 and "calls torch.matmul" in found[0] and "math.py" in found[0], found  # not the unused torch.mm
    assert analyse(main, NO_TORCH) == []  # without the helpers nothing can be read: the upload is what counts


def test_whole_operands_are_followed_into_a_helper_module() -> None:
    helper = "def product(x, y):\n    return x @ y\n"
    main = "import blas\n\ndef tiled_matmul(a, b, tile_m, tile_n, tile_k):\n    return blas.product(a, b), 0\n"
    found = analyse(main, TILING, {"blas.py": helper})
    assert found and "tiled_matmul -> blas.product, line 2 of blas.py: multiplies the whole operands" in found[0], found


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


# The lab-05 rule as its manifest states it: every library GEMM spelling below must be found.
LAB05 = Path(__file__).resolve().parents[2] / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-05-fused-moe-kernel"


def lab05_rule() -> RuleOptions:
    manifest = tomllib.loads((LAB05 / "manifest.toml").read_text())
    entry = dict(manifest["checks"]["no-library-gemm"])
    entry.pop("after", None)
    return RuleOptions(**entry)


SPELLINGS = {
    "alias bound to a name": ("mm = torch.matmul\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return mm(x, w1)", "calls torch.matmul"),
    "alias inside the function": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    f = torch.mm\n    return f(x, w1)", "refers to torch.mm"),
    "alias chain": ("a = torch.nn.functional\nlin = a.linear\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return lin(x, w1)", "calls torch.nn.functional.linear"),
    "tuple of aliases": ("mm, bmm = torch.mm, torch.bmm\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return bmm(x, w1)", "calls torch.bmm"),
    "helper passed to map": ("def down(pair):\n    return torch.mm(*pair)\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return sum(map(down, zip(x, w1)))", "fused_moe -> down, line 5: calls torch.mm"),
    "library function passed to map": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return list(map(torch.mm, x, w1))", "refers to torch.mm"),
    "lambda helper": ("down = lambda a, b: a @ b\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return down(x, w1)", "fused_moe -> down, line 4: uses the @ operator"),
    "aten overload": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.ops.aten.mm.default(x, w1)", "calls torch.ops.aten.mm.default"),
    "aten packet": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.ops.aten.addmm(x, x, w1)", "calls torch.ops.aten.addmm"),
    "ndarray.dot method": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return x.numpy().dot(w1.numpy())", "calls the method .dot()"),
    "ndarray.dot unbound": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return np.ndarray.dot(x, w1)", "calls numpy.ndarray.dot"),
    "Tensor.dot method": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return x[0].dot(w1[0])", "calls the method .dot()"),
    "np.tensordot": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return np.tensordot(x, w1, axes=1)", "calls numpy.tensordot"),
    "nn.Linear module": ("from torch import nn\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    lin = nn.Linear(4, 4)\n    return lin(x)", "calls torch.nn.Linear"),
    "nn.Linear in a class": ("class Expert(torch.nn.Module):\n    def __init__(self):\n        self.up = torch.nn.Linear(4, 4)\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return Expert()(x)", "fused_moe -> Expert, line 6: calls torch.nn.Linear"),
    "F.linear": ("import torch.nn.functional as F\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return F.linear(x, w1)", "calls torch.nn.functional.linear"),
    "linalg.vecdot": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.linalg.vecdot(x[:, None], w1[None], dim=-1)", "calls torch.linalg.vecdot"),
    "bmm": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.bmm(x, w1)", "calls torch.bmm"),
    "baddbmm": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.baddbmm(x, x, w1)", "calls torch.baddbmm"),
    "addmm method in place": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return x.addmm_(x, w1)", "calls the method .addmm_()"),
    "einsum": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.einsum('th,nh->tn', x, w1)", "calls torch.einsum"),
    "@ operator": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return x @ w1.T", "uses the @ operator"),
    "@= operator": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    x @= w1\n    return x", "uses the @ operator"),
    "operator.matmul": ("import operator\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return operator.matmul(x, w1)", "calls operator.matmul"),
    "Tensor.__matmul__": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.Tensor.__matmul__(x, w1)", "calls torch.Tensor.__matmul__"),
    "bound method reference": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    f = x.matmul\n    return f(w1)", "refers to the method .matmul"),
    "getattr constant": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return getattr(torch, 'matmul')(x, w1)", "calls torch.matmul"),
    "getattr computed": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return getattr(torch, 'mat' + 'mul')(x, w1)", "looks up an attribute of torch by a name computed at run time"),
    "eval": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return eval('x.matmul(w1)')", "calls eval, which runs code this rule cannot read"),
    "from-import": ("from torch import matmul as multiply\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return multiply(x, w1)", "calls torch.matmul"),
    "numpy module alias": ("import numpy.linalg as la\n\ndef fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return la.multi_dot([x, w1])", "calls numpy.linalg.multi_dot"),
    "conv as a GEMM": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch.nn.functional.conv1d(x[None], w1[:, :, None])", "calls torch.nn.functional.conv1d"),
    "grouped mm": ("def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return torch._grouped_mm(x, w1)", "calls torch._grouped_mm"),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_every_library_gemm_spelling_is_found(spelling: str) -> None:
    body, expected = SPELLINGS[spelling]
    source = "import numpy as np\nimport torch\n\n" + body + "\n"
    found = analyse(source, lab05_rule())
    assert any(expected in v for v in found), found


def test_the_solution_and_the_starter_follow_the_rule() -> None:
    for name in ("solution.py", "starter.py"):
        assert analyse((LAB05 / name).read_text(), lab05_rule()) == [], name


def test_allowed_torch_glue_is_not_flagged() -> None:
    source = """
    import torch
    import triton
    import triton.language as tl

    dtype = torch.float32
    mm = 16  # a local name that happens to spell a method

    @triton.jit
    def kernel(a_ptr, b_ptr, c_ptr, K: tl.constexpr):
        a = tl.load(a_ptr)
        tl.store(c_ptr, tl.dot(a, tl.load(b_ptr)))

    def helper(n):
        def nested_kernel_free():
            return torch.zeros(n, dtype=dtype)
        return nested_kernel_free()

    def fused_moe(x, w1, w2, topk_weights, topk_ids):
        torch.backends.cuda.matmul.allow_tf32 = False
        out = helper(x.shape[0]) + mm
        kernel[(1,)](x, w1, out, K=16)
        return out.to(x.dtype).contiguous()
    """
    assert violations(source, lab05_rule()) == []


def test_a_method_looked_up_by_constant_name_is_found() -> None:
    source = "def fused_moe(x, w1, w2, topk_weights, topk_ids):\n    return getattr(x, 'mm')(w1)\n"
    assert any("calls the method .mm()" in v for v in violations(source, lab05_rule()))
