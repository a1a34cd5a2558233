"""lab-06's grading on its own terms: the quantisation claim accepts what the format allows and
nothing else, oracle (ii)'s bound sits well above the format's own noise, poisoned memory
reaches the worker, and the known files are the bug alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import patch
from grader.checkers.compare import calc_diff
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import Status
from grader.sandbox.boot import wire
from grader.sandbox.boot import worker
from grader.selftest import expectations, ignoring, materialize
from grader.session import Grader

LAB06 = Path(__file__).resolve().parents[2] / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-06-fp8-block-scaled-moe"
KNOWN = sorted([*(LAB06 / "wrong").iterdir(), *(LAB06 / "accepted").iterdir()])


def load_lab() -> object:
    spec = importlib.util.spec_from_file_location("lab06_support_under_test", LAB06 / "lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lab = load_lab()


def reciprocal(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepGEMM's way: scale = amax * fl(1/448), values x * fl(448 / amax)."""
    M, K = x.shape
    G = -(-K // 128)
    padded = torch.zeros((M, G * 128))
    padded[:, :K] = x.float()
    groups = padded.view(M, G, 128)
    amax = groups.abs().amax(2).clamp(min=1e-4)
    q = (groups * (448.0 / amax)[:, :, None]).clamp(-448, 448).view(M, -1)[:, :K]
    return q.to(torch.float8_e4m3fn), amax * torch.tensor(1 / 448.0)


def problem(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> str | None:
    return lab.quant_problem(x, q.float().numpy(), s.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_quantisation_claim_accepts_the_reference_and_a_reciprocal_multiply(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    for M, K in ((7, 200), (3, 1000), (1, 1), (16, 384)):
        x = lab.quant_inputs(rng, M, K)["x"].to(dtype)
        assert problem(x, *lab.quantize_groups(x)) is None
        assert problem(x, *reciprocal(x)) is None
    for kind in lab.EDGE_KINDS:
        x = torch.from_numpy(lab._edge_input(rng, kind, 6, 300).astype(np.float32)).to(dtype)
        assert problem(x, *lab.quantize_groups(x)) is None, kind


def test_the_quantisation_claim_rejects_wrong_rounding_and_scales() -> None:
    rng = np.random.default_rng(1)
    x = lab.quant_inputs(rng, 8, 300)["x"]
    q, s = lab.quantize_groups(x)
    exact = (x / s.repeat_interleave(128, 1)[:, :300]).numpy()
    truncated = wire.E4M3FN[worker.to_e4m3fn(exact, toward_zero=True)]
    found = lab.quant_problem(x, truncated, s.numpy())
    assert found is not None and "not x / scale rounded to the nearest e4m3 value" in found
    two_ulp = torch.from_numpy(np.nextafter(np.nextafter(s.numpy(), np.float32(1)), np.float32(1)))
    found = problem(x, q, two_ulp)
    assert found is not None and "scales differ from max(amax, 0.0001) / 448 by more than 1 ulp" in found
    one_ulp = torch.from_numpy(np.nextafter(s.numpy(), np.float32(1)))
    assert problem(x, q, one_ulp) is None


def test_an_exact_tie_must_round_to_even_where_the_scale_is_a_power_of_two() -> None:
    x = torch.zeros((1, 128))
    x[0, 0] = 448.0  # scale 1.0
    x[0, 1] = 1.0625  # halfway between 1.0 (even) and 1.125
    q, s = lab.quantize_groups(x)
    assert s.item() == 1.0 and q[0, 1].float().item() == 1.0
    half_up = q.float().clone()
    half_up[0, 1] = 1.125
    found = lab.quant_problem(x, half_up.numpy(), s.numpy())
    assert found is not None and "value[0, 1]" in found


def test_oracle_ii_bound_is_well_above_the_formats_own_noise() -> None:
    """The format computed exactly (oracle (i)) against the unquantised layer, at the shapes
    oracle (ii) grades: the first 15 of the 100 draws per shape the manifest quotes (median
    2.1e-3, worst 4.9e-3), all under half the bound."""
    manifest = load_manifest(LAB06, default_plugins().checkers())
    bound = manifest.tolerance("quantisation-noise").calc_diff
    for dims in manifest.cases["cpu_noise"].fixed:
        rng = np.random.default_rng(0)
        noise = []
        for _ in range(15):
            inp = lab.cpu_inputs(rng, **dims)
            args = [torch.from_numpy(inp[n]) if isinstance(inp[n], np.ndarray) else inp[n] for n in ("x", "w1", "w1_scale", "w2", "w2_scale", "topk_weights", "topk_ids")]
            exact = lab.moe_dequant_reference(*args)
            full = lab.moe_unquantised_reference(args[0], inp["w1_full"], inp["w2_full"], args[5], args[6])
            noise.append(calc_diff(full.numpy(), exact.numpy()))
        assert 1e-3 < min(noise) and max(noise) < bound / 2, (dims, noise)


POISON_LAB = {
    "manifest.toml": """
[lab]
id = "lab-99-poison"
title = "t"
[lab.worker]
imports = ["torch"]
poison_uninitialized = true
[functions.uninit]
args = ["n"]
arrays = "torch"
returns = [{ name = "out", type = "tensor", dtype = "float32" }]
[tolerances.default]
atol = 1e-6
[cases.one]
generator = "sizes"
fixed = [{ n = 64 }]
[checks.reads-what-it-wrote]
kind = "oracle"
title = "t"
function = "uninit"
points = 1
cases = "one"
reference = "lab:zeros"
""",
    "lab.py": "def sizes(rng, n):\n    return {'n': n}\n\n\ndef zeros(n):\n    import torch\n    return torch.zeros(n)\n",
    "solution.py": "import torch\n\n\ndef uninit(n):\n    return torch.zeros(n)\n",
}


def test_poisoned_memory_reaches_the_worker(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab-99-poison"
    lab_dir.mkdir()
    for name, text in POISON_LAB.items():
        (lab_dir / name).write_text(text.lstrip())
    submission = tmp_path / "reads_garbage.py"
    submission.write_text("import torch\n\n\ndef uninit(n):\n    return torch.empty(n)  # never written\n")
    result = Grader(load_manifest(lab_dir, default_plugins().checkers())).grade(submission)
    check = result.checks[0]
    assert check.status is Status.failed and "64 NaN" in check.message, check.message


@pytest.mark.parametrize("path", KNOWN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_known_file_is_a_patch_that_applies_and_says_what_it_is(path: Path) -> None:
    text = path.read_text()
    assert path.suffix == ".patch"
    assert f"\n--- solution.py\n+++ {path.parent.name}/{path.stem}.py\n" in text
    diff = patch.parse(text)
    assert all(line.startswith("# ") for line in diff.preamble) and len(diff.preamble) >= 2
    if path.parent.name == "wrong":
        assert expectations(text) or ignoring(text)
    else:
        assert not expectations(text) and not ignoring(text)
    assert materialize(path, LAB06).data.decode() != (LAB06 / "solution.py").read_text()
