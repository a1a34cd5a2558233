"""Where a result was graded: the node, the Slurm job, and the GPU's model, driver and clocks."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from support import LAB01

from grader import hardware
from grader.environment import environment

SMI = """#!/bin/sh
# A stand-in for nvidia-smi: the CSV rows of --query-gpu=uuid,name,driver_version,clocks...
echo "$@" >> "$(dirname "$0")/calls"
echo "GPU-aaaa-1111, NVIDIA H100 80GB HBM3, 550.54.15, 1980, 2619, 1980, 2619"
echo "GPU-bbbb-2222, NVIDIA H100 80GB HBM3, 550.54.15, 345, [N/A], 1980, 2619"
"""


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return smi


def test_node_and_slurm_job_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    env = environment()
    assert env.node == socket.gethostname() and env.job is None
    assert (env.gpu, env.gpu_driver, env.gpu_uuid, env.gpu_clocks_mhz) == (None, None, None, None)
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    assert environment().job == "slurm 99"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert environment().job == "slurm 12_3"


def test_gpu_driver_and_clocks_come_from_the_row_of_the_grading_gpu(fake_smi: Path) -> None:
    details = hardware.gpu_details("GPU-bbbb-2222")
    assert details == {
        "gpu_driver": "550.54.15",
        "gpu_uuid": "GPU-bbbb-2222",
        "gpu_clocks_mhz": {"sm": 345, "sm_max": 1980, "memory_max": 2619},  # [N/A] left out
    }
    assert "--format=csv,noheader,nounits" in (fake_smi.parent / "calls").read_text()
    # With two GPUs and no way to tell which one grades, no row is guessed.
    assert hardware.gpu_details("GPU-cccc")["gpu_clocks_mhz"] is None


def test_a_gpu_grading_records_model_driver_and_clocks(fake_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_smi.write_text(SMI.replace('echo "GPU-bbbb', '# echo "GPU-bbbb'))  # one GPU on this node
    monkeypatch.setattr(hardware, "_torch_uuid", lambda: None)
    env = environment(gpu="NVIDIA H100 80GB HBM3")
    assert env.gpu == "NVIDIA H100 80GB HBM3" and env.gpu_driver == "550.54.15" and env.gpu_uuid == "GPU-aaaa-1111"
    assert env.gpu_clocks_mhz == {"sm": 1980, "memory": 2619, "sm_max": 1980, "memory_max": 2619}


def test_a_cpu_grading_records_no_gpu(grade, tmp_path: Path) -> None:
    result = grade(LAB01, LAB01 / "solution.py")
    env = result.environment
    assert env.node == socket.gethostname()
    assert (env.gpu, env.gpu_driver, env.gpu_uuid, env.gpu_clocks_mhz) == (None, None, None, None)
