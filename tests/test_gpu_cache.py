"""What GPU gradings share, without a GPU: the calibration reused across processes (once per
device, never twice at once), the reference's kernel folder (per device and solution, not
listable), and the old path when GRADER_GPU_CACHE=0."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from grader import gpu_cache, hardware

IDENTITY = {"device": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "torch": "2.11.0", "triton": "3.6.0", "uuid": "GPU-1"}
VALUES = {"reads": {"torch.sum": 3.1e12, "triton read": 3.2e12}, "copy": 2.9e12, "rates": {"bfloat16": 7.6e14}}


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(gpu_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(gpu_cache.SWITCH_ENV, raising=False)
    monkeypatch.delenv(gpu_cache.MAX_AGE_ENV, raising=False)
    return tmp_path / "cache"


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return VALUES


def test_a_calibration_is_measured_once_and_reused_by_the_next_process(cache_home: Path) -> None:
    measure = Counter()
    first, fresh = gpu_cache.calibration(IDENTITY, measure)
    again, fresh_again = gpu_cache.calibration(IDENTITY, measure)  # what a second worker process reads
    assert (fresh, fresh_again) == (True, False) and measure.calls == 1 and first == again == VALUES
    stored = list((cache_home / "calibration").glob("*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["identity"] == IDENTITY
    assert stat.S_IMODE((cache_home / "calibration").stat().st_mode) == 0o700


def test_another_device_or_driver_or_an_old_calibration_is_measured_anew() -> None:
    measure = Counter()
    gpu_cache.calibration(IDENTITY, measure)
    gpu_cache.calibration({**IDENTITY, "uuid": "GPU-2"}, measure)  # the second GPU of the host
    gpu_cache.calibration({**IDENTITY, "driver": "590.1"}, measure)
    assert measure.calls == 3
    later = time.time() + gpu_cache.DEFAULT_MAX_AGE_S + 1
    _, fresh = gpu_cache.calibration(IDENTITY, measure, now=lambda: later)
    assert fresh and measure.calls == 4


def test_a_damaged_calibration_file_is_measured_over(cache_home: Path) -> None:
    measure = Counter()
    gpu_cache.calibration(IDENTITY, measure)
    for path in (cache_home / "calibration").glob("*.json"):
        path.write_text("{not json")
    values, fresh = gpu_cache.calibration(IDENTITY, measure)
    assert fresh and values == VALUES and measure.calls == 2


@pytest.mark.parametrize("env", [(gpu_cache.SWITCH_ENV, "0"), (gpu_cache.MAX_AGE_ENV, "0")])
def test_the_old_path_calibrates_every_time(monkeypatch: pytest.MonkeyPatch, cache_home: Path, env: tuple[str, str]) -> None:
    monkeypatch.setenv(*env)
    measure = Counter()
    for _ in range(3):
        assert gpu_cache.calibration(IDENTITY, measure)[1]
    assert measure.calls == 3 and not (cache_home / "calibration").exists()


def _calibrate_in_a_process(cache: str, log: str) -> None:
    os.environ[gpu_cache.CACHE_ENV] = cache

    def measure() -> dict:
        with open(log, "a") as fh:
            fh.write(f"start {os.getpid()}\n")
        time.sleep(0.5)  # a measurement that takes a while: the others must wait, not measure too
        with open(log, "a") as fh:
            fh.write(f"end {os.getpid()}\n")
        return VALUES

    assert gpu_cache.calibration(IDENTITY, measure)[0] == VALUES


def test_processes_that_ask_at_once_share_one_measurement(cache_home: Path, tmp_path: Path) -> None:
    """Two batch workers starting together: one measures, the other waits for it (two timing the
    same GPU at once would disturb both)."""
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_calibrate_in_a_process, args=(str(cache_home), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "end"]


def test_measured_ceilings_use_the_fastest_read_and_say_so() -> None:
    ceilings = hardware.ceilings_from(VALUES, fresh=True)
    assert ceilings.bandwidth == 3.2e12 and ceilings.rates == {"bfloat16": 7.6e14}
    assert "triton read" in ceilings.source and "3200 GB/s" in ceilings.source and "2900 GB/s" in ceilings.source
    assert "within the last 3600 s" in hardware.ceilings_from(VALUES, fresh=False).source


# --- the reference's kernels -------------------------------------------------------------------


def test_the_reference_folder_is_per_device_and_solution_and_cannot_be_listed(tmp_path: Path, cache_home: Path) -> None:
    solution = tmp_path / "solution.py"
    solution.write_text("x = 1\n")
    folder = gpu_cache.reference_kernels(solution, IDENTITY)
    assert folder is not None and folder.parent == cache_home / "triton"
    assert stat.S_IMODE(folder.stat().st_mode) == gpu_cache.NOT_LISTABLE and stat.S_IMODE(folder.parent.stat().st_mode) == 0o711
    assert gpu_cache.reference_kernels(solution, IDENTITY) == folder
    assert gpu_cache.reference_kernels(solution, {**IDENTITY, "driver": "590.1"}) != folder
    assert gpu_cache.reference_kernels(solution, {**IDENTITY, "triton": "3.7.0"}) != folder
    solution.write_text("x = 2\n")
    assert gpu_cache.reference_kernels(solution, IDENTITY) != folder
    assert gpu_cache.reference_kernels(solution, {}) is None  # no CUDA device


def test_the_old_path_has_no_reference_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solution = tmp_path / "solution.py"
    solution.write_text("x = 1\n")
    monkeypatch.setenv(gpu_cache.SWITCH_ENV, "0")
    assert not gpu_cache.enabled() and gpu_cache.reference_kernels(solution, IDENTITY) is None


def test_the_read_kernel_sums_every_element_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration's Triton read kernels (grader/gpu_read.py), through Triton's interpreter: every
    element read once, ragged tiles masked."""
    import subprocess
    import sys

    code = (
        "import torch\nfrom grader import gpu_read\n"
        "buf = torch.arange(10_000, dtype=torch.float32)\n"
        "for block, warps in gpu_read.SHAPES[:2]:\n"
        "    assert float(gpu_read.read_sum(buf, 3, block, warps).sum()) == float(buf.sum())\n"
        "w, x = torch.randn(200, 384), torch.randn(16, 384)\n"  # ragged N and K tiles; fp32 (the interpreter's bf16 dot is wrong)
        "for bn, bk, warps, stages in gpu_read.DOT_SHAPES:\n"
        "    got = gpu_read.dot_read(w, x, bn, bk, warps, stages)\n"
        "    assert torch.allclose(got, x @ w.T, rtol=1e-4, atol=1e-3), (bn, bk)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_without_a_writable_cache_folder_gradings_just_do_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(gpu_cache.CACHE_ENV, str(blocker / "cache"))  # under a file: cannot be made
    solution = tmp_path / "solution.py"
    solution.write_text("x = 1\n")
    assert gpu_cache.reference_kernels(solution, IDENTITY) is None
    measure = Counter()
    assert gpu_cache.calibration(IDENTITY, measure) == (VALUES, True) and measure.calls == 1
