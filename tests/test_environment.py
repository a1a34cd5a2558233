"""Where a result was graded (the node, the Slurm job, the GPU's model, driver and clocks), and
whether this environment has what a lab needs (``lab.requires``), said before anything is graded."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from support import LAB01, PHASE, ROOT

from grader import environment as env_module
from grader import hardware
from grader.environment import environment, requirements_problem, unmet

LAB05 = PHASE / "lab-05-fused-moe-kernel"

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


@pytest.fixture
def without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """This environment as the README's first command leaves it: no triton distribution; run from
    the checkout, as the README does."""
    monkeypatch.chdir(ROOT)
    real = env_module._version
    monkeypatch.setattr(env_module, "_version", lambda dist: None if dist == "triton" else real(dist))


@pytest.mark.parametrize("file", ["solution.py", "starter.py"])
def test_a_lab_without_its_extra_says_so_before_grading_and_charges_nobody(
    run_cli, tmp_path: Path, without_triton: None, file: str
) -> None:
    code, out, err = run_cli("submit", LAB05 / file, "--out", tmp_path)
    assert code == 3, out + err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) <= 4 and "Traceback" not in out + err, out
    reason = "lab-05-fused-moe-kernel needs the triton extra (triton>=3.0 is not installed): pip install -e "
    assert reason in " ".join(out.split()) and reason in err
    assert "[triton]" in out and "ModuleNotFoundError" not in out + err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["gradable"] is False and result["problem"] == "infrastructure" and result["score"] == 0
    assert result["sandbox"]["mode"] == "none"  # no worker started: nothing of the student's ran
    assert all(c["message"] == f"not graded: {result['error']}" for c in result["checks"])


def test_a_batch_without_the_extra_stops_before_grading_in_one_line(run_cli, tmp_path: Path, without_triton: None) -> None:
    folder = tmp_path / "class"
    folder.mkdir()
    for student in ("ada", "bob"):
        (folder / f"{student}.py").write_text((LAB05 / "solution.py").read_text())
    code, out, err = run_cli("batch", folder, "-e", "lab-05", "--out", tmp_path / "out", "--allow-unsandboxed")
    assert code == 3, out + err
    assert err.strip().splitlines()[-1].startswith("grader: error: lab-05-fused-moe-kernel needs the triton extra")
    assert not (tmp_path / "out" / "ada").exists() and not (tmp_path / "out" / "bob").exists()


def test_the_selftest_says_what_is_missing(run_cli, without_triton: None) -> None:
    code, out, err = run_cli("selftest", "lab-05")
    assert code == 1 and "Traceback" not in out + err
    assert out.strip().splitlines() == [
        "selftest lab-05-fused-moe-kernel: FAIL  nothing can be graded here: lab-05-fused-moe-kernel needs the triton "
        "extra (triton>=3.0 is not installed): pip install -e '.[triton]'"
    ]


def test_unmet_requirements_name_what_is_installed() -> None:
    numpy = env_module._version("numpy")
    assert unmet(["numpy>=1", "numpy<1; python_version < '3'"]) == []
    (req, have), = unmet(["numpy<1"])
    assert str(req) == "numpy<1" and have == numpy
    problem = requirements_problem("lab-99-x", ["numpy<1", "no-such-distribution-for-grader>=2"])
    assert problem == (
        f"lab-99-x needs numpy and no-such-distribution-for-grader (numpy<1 is wanted, {numpy} is installed; "
        "no-such-distribution-for-grader>=2 is not installed): pip install 'numpy<1' 'no-such-distribution-for-grader>=2'"
    )
    assert requirements_problem("lab-99-x", ["numpy>=1"]) is None


def test_lab05_names_the_distribution_its_kernels_need() -> None:
    from grader.manifest import load_manifest
    from grader.plugins import default as default_plugins

    manifest = load_manifest(LAB05, default_plugins().checkers())
    assert manifest.lab.requires == ["triton>=3.0"]
    assert set(manifest.lab.worker.imports) >= {"triton"}


def test_a_requirement_that_is_not_one_names_its_key(make_lab, run_cli) -> None:
    make_lab(edit=lambda text: text.replace('hardware = "cpu"\n', 'hardware = "cpu"\nrequires = ["triton >=>= 3"]\n', 1))
    code, _, err = run_cli("validate")
    assert code == 2 and "lab.requires" in err and "is not a pip requirement" in err


def test_a_lab_import_that_fails_in_the_worker_is_the_installations_problem(make_lab, grade) -> None:
    """Even where the manifest forgot to list it: a module the lab imports before the submission,
    missing in the worker, is never the student's error."""
    lab = make_lab(edit=lambda text: text.replace("[lab.worker]\n", "[lab.worker]\nimports = [\"no_such_module_for_grader\"]\n", 1)
                   if "[lab.worker]" in text else text + '\n[lab.worker]\nimports = ["no_such_module_for_grader"]\n')
    result = grade(lab, LAB01 / "solution.py")
    assert result.gradable is False and result.problem.value == "infrastructure"
    assert "could not import what the lab needs (numpy, no_such_module_for_grader)" in result.error
    assert "ModuleNotFoundError" in result.error and result.score == 0
