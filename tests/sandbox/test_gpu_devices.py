"""A GPU worker's sandbox gets only the allocated GPUs' device files, renumbered from 0."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path

import pytest

from grader.sandbox import launchers, tiers
from grader.sandbox.launchers import Limits, gpu_devices, worker_env


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A /dev with four GPUs, the control files, and no nvidia-smi on PATH."""
    folder = tmp_path / "dev"
    (folder / "nvidia-caps").mkdir(parents=True)
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia10", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "null"):
        (folder / name).write_text("")
    monkeypatch.setattr(launchers, "DEV", str(folder))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    launchers._smi_gpus.cache_clear()
    yield folder
    launchers._smi_gpus.cache_clear()


def names(paths: list[str]) -> list[str]:
    return [os.path.basename(p) for p in paths]


CONTROL = ["nvidia-caps", "nvidia-uvm", "nvidia-uvm-tools", "nvidiactl"]


@pytest.mark.parametrize(
    ("visible", "files", "inside"),
    [
        (None, [*CONTROL, "nvidia0", "nvidia1", "nvidia2", "nvidia10"], None),  # no allocation: the whole machine
        ("2", [*CONTROL, "nvidia2"], "0"),
        ("10,1", [*CONTROL, "nvidia10", "nvidia1"], "0,1"),
        ("1,1", [*CONTROL, "nvidia1"], "0"),
        ("", CONTROL, ""),  # no GPU at all
        ("-1", CONTROL, ""),
        ("0,-1,2", [*CONTROL, "nvidia0"], "0"),  # CUDA stops at the first invalid entry
        ("7", CONTROL, ""),  # allocated but absent here: nothing to bind (the preflight says so)
        ("GPU-1234abcd", [*CONTROL, "nvidia0", "nvidia1", "nvidia2", "nvidia10"], "GPU-1234abcd"),  # unmappable
        ("MIG-5678", [*CONTROL, "nvidia0", "nvidia1", "nvidia2", "nvidia10"], "MIG-5678"),
    ],
)
def test_allocated_gpus_without_nvidia_smi(dev: Path, visible: str | None, files: list[str], inside: str | None) -> None:
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    bound, seen = gpu_devices(env)
    assert names(bound) == files and seen == inside


def test_nvidia_smi_maps_indices_and_uuids_to_minor_numbers(dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under cgroups a task sees its GPUs as 0, 1...; nvidia-smi gives each one's device minor number.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "0, GPU-aaaa-1111, 2"\necho "1, GPU-bbbb-2222, 10"\n')
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    launchers._smi_gpus.cache_clear()
    assert names(gpu_devices({"CUDA_VISIBLE_DEVICES": "0"})[0]) == [*CONTROL, "nvidia2"]
    assert gpu_devices({"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}) == ([*(str(dev / c) for c in CONTROL), str(dev / "nvidia10")], "0")
    assert names(gpu_devices({"CUDA_VISIBLE_DEVICES": "1,0"})[0]) == [*CONTROL, "nvidia10", "nvidia2"]


def test_bubblewrap_binds_only_the_allocated_gpu_and_renumbers_it(dev: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    launcher = dataclasses.replace(tiers.probe(), gpu=True)
    cmd = launcher.command(sys.executable, Path("/tmp/x/sub.py"), (5, 6), worker_env({}, 1), Limits())
    argv = cmd.argv
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--dev-bind"]
    assert names(binds) == [*CONTROL, "nvidia1"]
    settings = [argv[i + 1 : i + 3] for i, a in enumerate(argv) if a == "--setenv" and argv[i + 1] == "CUDA_VISIBLE_DEVICES"]
    assert settings[-1] == ["CUDA_VISIBLE_DEVICES", "0"]  # the last --setenv wins
    for fd in cmd.pass_fds[2:]:
        os.close(fd)

    cpu = dataclasses.replace(tiers.probe(), gpu=False)
    cmd = cpu.command(sys.executable, Path("/tmp/x/sub.py"), (5, 6), worker_env({}, 1), Limits())
    assert "--dev-bind" not in cmd.argv  # a CPU worker gets no GPU at all
    for fd in cmd.pass_fds[2:]:
        os.close(fd)
