"""Values an FP8 lab sends and receives: float8_e4m3fn as exact bit patterns both ways, strided
tensors as the same views (gaps included), the interpreter's e4m3 conversion as a GPU does it,
and uninitialised memory poisoned while a graded call runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.manifest import OutputSpec
from grader.results import Status
from grader.sandbox import values
from grader.sandbox.boot import wire
from grader.sandbox.boot import worker as boot_worker
from grader.sandbox.values import SubmissionFault
from grader.tensors import to_numpy

E4M3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)


@pytest.fixture
def worker() -> object:
    boot_worker.torch = torch  # what the worker sets once it has imported torch
    return boot_worker


def test_the_e4m3fn_table_is_torchs() -> None:
    ours, theirs = wire.E4M3FN, E4M3.float().numpy()
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)) and np.isnan(ours).sum() == 2
    finite = ~np.isnan(theirs)
    assert np.array_equal(ours[finite], theirs[finite]) and np.nanmax(ours) == 448.0


def test_float8_crosses_to_the_worker_and_back_bit_for_bit(worker: object) -> None:
    t = E4M3[torch.tensor([0, 1, 7, 8, 56, 100, 126, 128, 200, 254])].reshape(2, 5)
    arrays: list[np.ndarray] = []
    spec = values.encode_input(t, arrays, None)
    assert spec["dtype"] == "float8_e4m3fn" and arrays[0].dtype == np.uint8
    received = worker.to_input(spec, [wire.npy_bytes(a) for a in arrays])
    assert received.dtype == torch.float8_e4m3fn and torch.equal(received.view(torch.uint8), t.view(torch.uint8))
    bits, name = worker.as_numpy(received)
    answer = {"t": "tensor", "f": 0, "dtype": name, "exact": True}
    out = values.validate_output(answer, [wire.npy_bytes(bits)], OutputSpec(name="q", type="tensor", dtype="float8_e4m3fn"), None, "q")
    assert out.dtype == np.float32 and np.array_equal(out, t.float().numpy())
    assert np.array_equal(to_numpy(t), t.float().numpy())


def test_a_float8_answer_of_another_dtype_or_holding_nan_fails(worker: object) -> None:
    spec = OutputSpec(name="q", type="tensor", dtype="float8_e4m3fn")
    bits, name = worker.as_numpy(torch.ones(3))
    with pytest.raises(SubmissionFault, match="has dtype float32, expected float8_e4m3fn"):
        values.validate_output({"t": "tensor", "f": 0, "exact": True}, [wire.npy_bytes(bits)], spec, None, "q")
    nan, name = worker.as_numpy(E4M3[torch.tensor([0x7F, 1])])
    with pytest.raises(SubmissionFault, match="1 NaN"):
        values.validate_output({"t": "tensor", "f": 0, "dtype": name, "exact": True}, [wire.npy_bytes(nan)], spec, None, "q")
    forged = {"t": "tensor", "f": 0, "dtype": "float8_e4m3fn", "exact": True}
    with pytest.raises(SubmissionFault) as err:
        values.validate_output(forged, [wire.npy_bytes(np.zeros(3, np.uint16))], spec, None, "q")
    assert err.value.status is Status.error and "malformed" in err.value.message


def gaps() -> torch.Tensor:
    """A (4, 6) view of a (5, 9) NaN buffer: three NaN between consecutive rows."""
    view = torch.full((5, 9), float("nan"))[:4, :6]
    view.copy_(torch.arange(24.0).reshape(4, 6))
    return view


@pytest.mark.parametrize(
    "make",
    [gaps, lambda: torch.arange(24.0).reshape(2, 3, 4).transpose(1, 2), lambda: E4M3[torch.arange(60) % 120].reshape(6, 10)[1:, ::2]],
    ids=["gaps", "transposed", "float8-every-other-column"],
)
def test_a_strided_argument_arrives_as_the_same_view_gaps_included(worker: object, make: object) -> None:
    t = make()
    assert not t.is_contiguous()
    arrays: list[np.ndarray] = []
    spec = values.encode_input(t, arrays, None)
    received = worker.to_input(spec, [wire.npy_bytes(a) for a in arrays])
    assert received.stride() == t.stride() and received.shape == t.shape and received.dtype == t.dtype
    same_width = torch.uint8 if t.dtype == torch.float8_e4m3fn else torch.int32
    assert torch.equal(received.contiguous().view(same_width), t.contiguous().view(same_width))
    if make is gaps:  # what lies between the rows travelled too: a kernel ignoring the stride reads NaN
        assert torch.isnan(torch.as_strided(received, (arrays[0].size,), (1,))).sum() == 9


def test_to_e4m3fn_rounds_as_torch_does_at_every_value_midpoint_and_neighbour(worker: object) -> None:
    finite = E4M3[:127].float().double().numpy()
    mids = (finite[:-1] + finite[1:]) / 2
    m32 = mids.astype(np.float32)
    probes = np.concatenate([finite, mids, np.nextafter(m32, np.float32(0)), np.nextafter(m32, np.float32(1e9))])
    probes = np.concatenate([probes, [500.0, 1e30, np.inf], np.random.default_rng(0).standard_normal(10000) * 50]).astype(np.float32)
    probes = np.concatenate([probes, -probes])
    ours = worker.to_e4m3fn(probes)
    theirs = torch.from_numpy(probes).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(ours, theirs)
    assert worker.to_e4m3fn(np.array([np.nan]))[0] == 0x7F
    assert list(worker.to_e4m3fn(np.array([1.9, 1.06249, 0.0029296875]), toward_zero=True)) == [0x3F, 0x38, 0x01]


INTERPRETED = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch, triton, triton.language as tl
    import worker

    @triton.jit
    def cast(x_ptr, q_ptr, f_ptr, b_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n)
        tl.store(q_ptr + offs, x.to(tl.float8e4nv), mask=offs < n)
        tl.store(f_ptr + offs, tl.load(q_ptr + offs, mask=offs < n).to(tl.float32), mask=offs < n)
        tl.store(b_ptr + offs, tl.load(q_ptr + offs, mask=offs < n).to(tl.bfloat16), mask=offs < n)

    x = torch.tensor([1.0625, 1.94, 0.0029296875, 0.007, 500.0, -1e4, float("nan"), 0.1219])
    want = x.clamp(-448, 448).to(torch.float8_e4m3fn)
    for mode in ("shipped", "repaired"):
        if mode == "repaired":
            worker.repair_interpreter()
        q, f, b = torch.empty(8, dtype=torch.float8_e4m3fn), torch.empty(8), torch.empty(8, dtype=torch.bfloat16)
        cast[(1,)](x, q, f, b, 8, BLOCK=8)
        widened = f[:6].tolist() == want.float()[:6].tolist() and b[:6].float().tolist() == want.float()[:6].tolist()
        print(mode, q.view(torch.uint8).tolist() == want.view(torch.uint8).tolist(), widened, bool(f[6].isnan() and b[6].isnan()))
""")


def test_the_worker_repairs_the_interpreters_e4m3_conversion(tmp_path: Path) -> None:
    script = tmp_path / "cast.py"
    script.write_text(INTERPRETED)
    boot = Path(boot_worker.__file__).parent
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(boot)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()[-2:]
    # As shipped (Triton 3.x) the interpreter gets all three wrong: rounding, the NaN it reads
    # back. A Triton that fixes them would make the repair unnecessary, and this line shows it.
    assert lines[0] == "shipped False False False", proc.stdout
    assert lines[1] == "repaired True True True", proc.stdout


def test_poisoned_memory_reads_nan_while_active_and_restores_torchs_settings(worker: object) -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
    with worker.PoisonedMemory(True):
        assert torch.isnan(torch.empty(64)).all() and torch.isnan(torch.empty(8, dtype=torch.bfloat16)).all()
        assert (torch.empty(4, dtype=torch.int32) == torch.iinfo(torch.int32).max).all()
        assert (torch.empty(4, dtype=torch.float8_e4m3fn).view(torch.uint8) == 0x7F).all()
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == before
    with worker.PoisonedMemory(False):
        assert not torch.are_deterministic_algorithms_enabled()
