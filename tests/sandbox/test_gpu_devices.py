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


def _slurm_node(tmp_path: Path, dev: Path, gres: str, constrained: bool) -> dict[str, str]:
    """A node's slurm.conf, gres.conf and cgroup.conf; the environment Slurm gives its jobs."""
    conf = tmp_path / "etc-slurm"
    conf.mkdir(exist_ok=True)
    task = "task/affinity,task/cgroup" if constrained else "task/none"
    (conf / "slurm.conf").write_text(f"ClusterName=c\nTaskPlugin={task}\nGresTypes=gpu\n")
    (conf / "gres.conf").write_text(gres.replace("DEV", str(dev)))
    (conf / "cgroup.conf").write_text("CgroupPlugin=autodetect\nConstrainDevices=yes\n")
    return {"SLURM_CONF": str(conf / "slurm.conf"), "SLURMD_NODENAME": "gpu07"}


# gres.conf lists nvidia2 first: its GPU index 0 is /dev/nvidia2, whatever its minor number says.
GRES = """# the node's GPUs, not in the order of their numbers
NodeName=gpu[01-04] Name=gpu Type=a100 File=DEV/nvidia0
NodeName=gpu[05-08] Name=gpu Type=h100 File=DEV/nvidia2
NodeName=gpu[05-08] Name=gpu Type=h100 File=DEV/nvidia[0-1]
NodeName=gpu[05-08] Name=gpu Type=h100 File=DEV/nvidia10
"""


@pytest.mark.parametrize(
    ("constrained", "visible", "job_gpus", "files"),
    [
        (False, "1", "1", ["nvidia0"]),  # index 1 in gres.conf order, not minor 1
        (False, "0,3", "0,3", ["nvidia2", "nvidia10"]),
        (True, "0", "1", ["nvidia0"]),  # ConstrainDevices: the job's own GPUs are 0, 1, ...
        (True, "0", "3", ["nvidia10"]),
        (True, "0,1", "2,0", ["nvidia2", "nvidia1"]),  # the n-th of the job's GPUs in index order
        (True, "1", "0,3", ["nvidia10"]),
    ],
)
def test_a_slurm_allocation_is_mapped_through_gres_conf_order_and_cgroup_renumbering(
    dev: Path, tmp_path: Path, constrained: bool, visible: str, job_gpus: str, files: list[str]
) -> None:
    env = _slurm_node(tmp_path, dev, GRES, constrained) | {"CUDA_VISIBLE_DEVICES": visible, "SLURM_JOB_GPUS": job_gpus}
    bound, seen = gpu_devices(env)
    assert names(bound) == [*CONTROL, *files] and seen == ",".join(str(i) for i in range(len(files)))
    # Inside a step, the step's GPUs count (a step may get fewer than its job).
    step = env | {"SLURM_STEP_GPUS": job_gpus.split(",")[-1], "CUDA_VISIBLE_DEVICES": "0" if constrained else job_gpus.split(",")[-1]}
    assert len(gpu_devices(step)[0]) == len(CONTROL) + 1


def test_without_a_readable_slurm_configuration_the_old_rules_apply(dev: Path, tmp_path: Path) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "1", "SLURM_JOB_GPUS": "1", "SLURM_CONF": str(tmp_path / "missing" / "slurm.conf")}
    assert names(gpu_devices(env)[0]) == [*CONTROL, "nvidia1"]  # an index taken as the minor number
    # gres.conf without File= (AutoDetect=nvml): nothing names the files; other nodes' lines do not count
    env = _slurm_node(tmp_path, dev, "AutoDetect=nvml\nNodeName=gpu01 Name=gpu File=DEV/nvidia2\n", True) | {
        "CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "1",
    }  # fmt: skip
    assert names(gpu_devices(env)[0]) == [*CONTROL, "nvidia0"]


def test_host_lists_expand_as_slurm_s_do() -> None:
    from grader.sandbox.allocation import expand

    assert expand("/dev/nvidia[0-3]") == [f"/dev/nvidia{i}" for i in range(4)]
    assert expand("gpu[01-03,7],login") == ["gpu01", "gpu02", "gpu03", "gpu7", "login"]
    assert expand("r[1-2]n[0-1]") == ["r1n0", "r1n1", "r2n0", "r2n1"]
    with pytest.raises(ValueError):
        expand("gpu[a-b]")
