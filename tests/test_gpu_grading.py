"""How a grading gets its GPU checks ready, on a machine without a GPU (the device is faked, the
sandbox is real): while the CPU checks run, the grader compiles the solution on every GPU shape
into the reference folder and calibrates, and the GPU worker starts; that worker is handed the
folder. With GRADER_GPU_CACHE=0 none of it happens (the old path)."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import pytest
from support import LAB01

from grader import gpu_cache, hardware, hookimpl, plugins
from grader.checkers.base import CheckContext, Checker, Verdict
from grader.lab import Lab
from grader.manifest import CheckSpec, Hardware, load_manifest
from grader.sandbox.client import Submission
from grader.session import Grader, GradingOptions

IDENTITY = {"device": "Fake GPU", "capability": "9.0", "driver": "1", "torch": "t", "triton": "tr"}


class ProbeOptions(CheckSpec):
    kind: Literal["gpu-probe"] = "gpu-probe"
    requires: Hardware = Hardware.gpu
    cases: str


class GpuProbe(Checker):
    """Records what a GPU check finds when its turn comes."""

    name = "gpu-probe"
    Options = ProbeOptions
    seen: ClassVar[list[dict[str, Any]]] = []
    events: ClassVar[list[str]] = []

    def prepare(self, check_id: str, check: Any, lab: Any, seeds: Any) -> None:
        self.events.append(f"prepare {check_id} in {threading.current_thread().name != 'MainThread' and 'background' or 'main'}")

    def run(self, check_id: str, check: Any, ctx: CheckContext) -> Verdict:
        self.events.append(f"run {check_id}")
        self.seen.append(
            {
                "kernels": ctx.submission.launcher.reference_kernels,
                "device": ctx.submission.torch_device,
            }
        )
        return Verdict.passed("probed")


def registry() -> plugins.Plugins:
    module = ModuleType("gpu_probe_plugin")
    module.grader_register_checkers = hookimpl(lambda: [GpuProbe])  # type: ignore[attr-defined]
    return plugins.build(autoload=True, extra=[module])


@pytest.fixture
def gpu_lab(make_lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    probe = textwrap.dedent(
        """
        [checks.gpu-a]
        kind = "gpu-probe"
        title = "a"
        function = "expert_mlp"
        points = 0
        cases = "expert_mlp"

        [checks.gpu-b]
        kind = "gpu-probe"
        title = "b"
        function = "expert_mlp"
        points = 0
        cases = "expert_mlp"
        """
    )
    lab = make_lab(edit=lambda text: text + probe)
    monkeypatch.setattr(hardware, "cuda_device", lambda: "Fake GPU")
    monkeypatch.setattr(hardware, "device_identity", lambda: IDENTITY)
    monkeypatch.setenv(gpu_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    GpuProbe.seen.clear()
    GpuProbe.events.clear()
    return Lab(load_manifest(lab, registry().checkers()))


def grade(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []
    original = Lab.call_solution

    def recording(self: Lab, function: str, inputs: Any, *args: Any, **kw: Any) -> Any:
        calls.append((function, threading.current_thread().name))
        return original(self, function, inputs, *args, **kw)

    monkeypatch.setattr(Lab, "call_solution", recording)
    start = Submission.start

    def recording_start(self: Submission) -> None:
        if self._worker is None:
            calls.append((f"start {self.torch_device}", threading.current_thread().name))
        start(self)

    monkeypatch.setattr(Submission, "start", recording_start)
    return Grader(lab, GradingOptions(), registry()).grade(LAB01 / "solution.py"), calls


def test_the_gpu_worker_starts_early_and_reads_the_reference_folder(gpu_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    result, calls = grade(gpu_lab, monkeypatch)
    assert result.gradable and {c.id: c.status.value for c in result.checks}["gpu-a"] == "passed"
    folder = gpu_cache.reference_kernels(gpu_lab.directory / "solution.py", IDENTITY)
    assert [s["kernels"] for s in GpuProbe.seen] == [str(folder)] * 2 and all(s["device"] == "cuda" for s in GpuProbe.seen)
    starts = {(c[0], c[1] == "MainThread") for c in calls if c[0].startswith("start")}
    assert starts == {("start cuda", False), ("start cpu", True)}  # the GPU worker starts in the background
    assert os.environ["TRITON_CACHE_DIR"] == str(folder)  # the grader's own compiles go there
    # every prepare ran, in the background, before any GPU check; the solution ran once per shape
    assert GpuProbe.events[:2] == ["prepare gpu-a in background", "prepare gpu-b in background"]
    assert GpuProbe.events[2:] == ["run gpu-a", "run gpu-b"]
    warm = [c for c in calls if c[1] != "MainThread" and not c[0].startswith("start")]
    seeds = Grader(gpu_lab).seeds
    shapes = {tuple(sorted(c.dims.items())) for cid in ("gpu-a", "gpu-b") for c in gpu_lab.cases("expert_mlp", seeds, cid)}
    assert len(warm) == len(shapes) and all(f == "expert_mlp" for f, _ in warm)


def test_the_old_path_starts_the_gpu_worker_at_its_turn_without_a_folder(gpu_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpu_cache.SWITCH_ENV, "0")
    result, calls = grade(gpu_lab, monkeypatch)
    assert result.gradable
    assert [s["kernels"] for s in GpuProbe.seen] == [None, None]
    assert GpuProbe.events == ["run gpu-a", "run gpu-b"] and all(t == "MainThread" for _, t in calls)
    assert [c[0] for c in calls if c[0].startswith("start")] == ["start cpu", "start cuda"]
