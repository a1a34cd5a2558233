"""``grader slurm``: grade a class as a Slurm job array on the batch store, then merge.

The grader writes two batch scripts under ``OUT/.slurm/``: an array whose task K grades shard
K+1 of N (``grader batch --shard``) into the shared OUT, and a merge job (``grader batch
--merge-only``) that writes summary.md, gradebook.csv and histogram.png from every stored
result. The merge depends on the array with ``afterany``: ``afterok`` on an array with one
failed task never becomes satisfiable and stays pending for ever. A task that dies, times out
or is preempted is simply run again: the store skips the students already graded.

The secret seed never goes into a script or onto a command line (slurmctld stores both, and
``scontrol`` shows them): it is written to ``OUT/.slurm/secret-seed`` with mode 0600 and the
job reads it through ``GRADER_SECRET_SEED_FILE``. The scripts also clear ``GRADER_SECRET_SEED``
in ``--export``, so a TA who has it in their shell does not ship it with the job's environment.

Each array task first runs ``python -m grader.batch.slurm preflight``: the sandbox must start on
the node (a TA is not root on a cluster, so bubblewrap needs unprivileged user namespaces) and
must see exactly the task's GPUs, or the task stops at once with a message saying which.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grader import __version__
from grader.atomic import write_atomic
from grader.errors import InfrastructureError, UsageError
from grader.seeds import SECRET_ENV, SECRET_FILE_ENV

SLURM_DIR = ".slurm"
SECRET_FILE = "secret-seed"
GRADE_SCRIPT = "grade.sbatch"
MERGE_SCRIPT = "merge.sbatch"


@dataclass
class SlurmPlan:
    """What the job array grades, where, and what it asks Slurm for."""

    folder: Path
    out: Path
    lab_id: str
    exercises: Path
    tasks: int
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    constraint: str | None = None
    seed: int | None = None
    allow_unsandboxed: bool = False
    secret_file: Path | None = None
    python: str = sys.executable

    @property
    def folder_abs(self) -> Path:
        return self.folder.resolve()

    @property
    def out_abs(self) -> Path:
        return self.out.resolve()

    @property
    def slurm_dir(self) -> Path:
        return self.out_abs / SLURM_DIR


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _directives(plan: SlurmPlan, name: str, log: str, time: str | None) -> list[str]:
    lines = [f"#SBATCH --job-name={name}", f"#SBATCH --output={plan.slurm_dir / 'logs' / log}"]
    for flag, value in (("partition", plan.partition), ("account", plan.account), ("time", time)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    # Whatever the submitting shell holds, the secret does not travel with the job's environment.
    lines.append(f"#SBATCH --export=ALL,{SECRET_ENV}=")
    return lines


def _environment(plan: SlurmPlan) -> list[str]:
    lines = ["set -euo pipefail", f"export GRADER_EXERCISES={_q(plan.exercises.resolve())}"]
    if plan.secret_file is not None:
        lines.append(f"export {SECRET_FILE_ENV}={_q(plan.secret_file)}")
    else:
        lines.append(f"unset {SECRET_FILE_ENV}  # no secret seed: the public seed only")
    lines.append(f"PYTHON={_q(plan.python)}")
    return lines


def _common_args(plan: SlurmPlan) -> str:
    args = f"{_q(plan.folder_abs)} --exercise {_q(plan.lab_id)} --out {_q(plan.out_abs)}"
    if plan.seed is not None:
        args += f" --seed {plan.seed}"
    if plan.allow_unsandboxed:
        args += " --allow-unsandboxed"
    return args


def array_script(plan: SlurmPlan) -> str:
    """The sbatch script of the array: task K (0-based) grades shard K+1 of N."""
    lines = ["#!/bin/bash"]
    lines += _directives(plan, f"grade-{plan.lab_id}", "grade-%A_%a.out", plan.time)
    lines += [f"#SBATCH --array=0-{plan.tasks - 1}", f"#SBATCH --cpus-per-task={plan.cpus_per_task}"]
    if plan.gpus_per_task:
        lines.append(f"#SBATCH --gres=gpu:{plan.gpus_per_task}")
    if plan.constraint:
        lines.append(f"#SBATCH --constraint={plan.constraint}")
    lines += [
        f"# Written by `grader slurm` (grader {__version__}). Task K grades shard K+1 of {plan.tasks} of",
        f"# {plan.folder_abs} into {plan.out_abs}. A task that dies is simply run again",
        "# (sbatch --array=K this-file): students already graded are skipped.",
        "# The secret seed is read from a 0600 file, never written here.",
    ]
    lines += _environment(plan)
    lines += [
        f'SHARD="$((SLURM_ARRAY_TASK_ID + 1))/{plan.tasks}"',
        'echo "grader slurm: shard $SHARD on $(hostname), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"',
        "# Preamble: the sandbox must start on this node and see only this task's GPUs.",
        f'"$PYTHON" -m grader.batch.slurm preflight --gpus {plan.gpus_per_task}'
        + (" --allow-unsandboxed" if plan.allow_unsandboxed else "")
        + " || exit 3",
        f'exec "$PYTHON" -m grader batch {_common_args(plan)} --shard "$SHARD" --jobs "${{SLURM_CPUS_PER_TASK:-1}}"',
        "",
    ]
    return "\n".join(lines)


def merge_script(plan: SlurmPlan) -> str:
    """The sbatch script of the merge: the class outputs from every stored result."""
    lines = ["#!/bin/bash"]
    lines += _directives(plan, f"merge-{plan.lab_id}", "merge-%j.out", "00:10:00" if plan.time else None)
    lines += [
        "#SBATCH --cpus-per-task=1",
        f"# Written by `grader slurm` (grader {__version__}). Submit it after the array with",
        "# --dependency=afterany:<array job id>: it runs whatever the tasks' outcome and lists",
        "# the students no task graded.",
    ]
    lines += _environment(plan)
    lines += [f'exec "$PYTHON" -m grader batch {_common_args(plan)} --merge-only', ""]
    return "\n".join(lines)


def write_secret(out: Path, secret: str) -> Path:
    """``OUT/.slurm/secret-seed``, mode 0600 from its creation, replaced atomically."""
    folder = out.resolve() / SLURM_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_atomic(folder / SECRET_FILE, secret + "\n", mode=0o600)  # its temporary file is 0600 too


def write_scripts(plan: SlurmPlan) -> tuple[Path, Path]:
    folder = plan.slurm_dir
    try:
        (folder / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot create it ({exc.strerror})") from None
    grade, merge = folder / GRADE_SCRIPT, folder / MERGE_SCRIPT
    grade.write_text(array_script(plan), encoding="utf-8")
    merge.write_text(merge_script(plan), encoding="utf-8")
    return grade, merge


def sbatch_path() -> str:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UsageError("sbatch is not on PATH: run this on a Slurm login node, or use --print and submit by hand")
    return sbatch


def _sbatch(args: list[str]) -> str:
    """Run sbatch --parsable; the job id (without a cluster name)."""
    sbatch = sbatch_path()
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}  # the scripts clear it too
    try:
        proc = subprocess.run([sbatch, "--parsable", *args], capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        raise InfrastructureError("sbatch did not answer within 120 s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise InfrastructureError(f"sbatch {' '.join(args)} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    job = proc.stdout.strip().split(";")[0]
    if not job.isdigit():
        raise InfrastructureError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    return job


def submit(grade: Path, merge: Path) -> tuple[str, str]:
    """Submit the array, then the merge after it whatever its outcome; both job ids."""
    array = _sbatch([str(grade)])
    try:
        merged = _sbatch([f"--dependency=afterany:{array}", str(merge)])
    except (UsageError, InfrastructureError) as exc:
        raise InfrastructureError(f"the array is job {array}, but the merge could not be submitted: {exc}") from None
    return array, merged


# -- the preamble each array task runs on its node -------------------------------------------------

PROBE_DEVICES = (
    "import glob, json, os; "
    "print(json.dumps([sorted(glob.glob('/dev/nvidia[0-9]*')), os.environ.get('CUDA_VISIBLE_DEVICES')]))"
)


def _userns_diagnosis() -> str:
    """Why an unprivileged user namespace may be refused on this node, if a setting says so."""
    for path, bad, what in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0", "unprivileged user namespaces are disabled"),
        ("/proc/sys/user/max_user_namespaces", "0", "user namespaces are disabled (user.max_user_namespaces = 0)"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10 and later)",
        ),
    ):
        try:
            if Path(path).read_text().strip() == bad:
                return f"{what} ({path} = {bad})"
        except OSError:
            continue
    return ""


def preflight(gpus: int, allow_unsandboxed: bool = False) -> tuple[bool, str]:
    """Can this node grade officially, seeing exactly its allocated GPUs? (ok, one line to print)."""
    from grader.sandbox.launchers import NVIDIA_GPU_FILE, assess, gpu_devices, refusal
    from grader.sandbox.tiers import probe, run_in_sandbox

    node = socket.gethostname()
    launcher = assess(probe(sys.executable, gpus > 0))
    if launcher.degraded and not allow_unsandboxed:
        hint = _userns_diagnosis() if os.geteuid() != 0 else ""
        return False, (
            f"node {node}: official grading cannot run here: {refusal(launcher)}"
            + (f"; {hint}: ask the cluster's admins to allow them for bwrap" if hint else "")
            + "; or grade on other nodes (sbatch --exclude / --constraint)"
        )
    sandbox = launcher.mode + (" (DEGRADED)" if launcher.degraded else "")
    if gpus <= 0:
        return True, f"node {node}: sandbox {sandbox}, no GPU asked for"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return False, f"node {node}: {gpus} GPU(s) asked for but CUDA_VISIBLE_DEVICES is not set: did the job get --gres=gpu:{gpus}?"
    devices, inside = gpu_devices(os.environ)
    bound = [d for d in devices if NVIDIA_GPU_FILE.match(os.path.basename(d))]
    if "MIG-" in visible:  # MIG instances share their GPU's device file: CUDA_VISIBLE_DEVICES alone selects them
        return True, f"node {node}: sandbox {sandbox}; CUDA_VISIBLE_DEVICES={visible} (MIG): every GPU device file is bound"
    if inside is None or len(bound) != gpus:
        return False, (
            f"node {node}: CUDA_VISIBLE_DEVICES={visible} for {gpus} GPU(s), but the sandbox would get "
            f"{', '.join(bound) or 'no GPU device file'}" + (" (the entries could not be mapped to device files)" if inside is None else "")
        )
    if launcher.mode == "bubblewrap":
        ok, line = run_in_sandbox(launcher, PROBE_DEVICES)
        try:
            seen, seen_visible = json.loads(line) if ok else (None, None)
        except ValueError:
            seen, seen_visible = None, None
        if seen != bound or seen_visible != inside:
            return False, f"node {node}: the sandbox sees {seen} with CUDA_VISIBLE_DEVICES={seen_visible}, expected {bound} with {inside} ({line})"
    return True, f"node {node}: sandbox {sandbox}; CUDA_VISIBLE_DEVICES={visible}: the sandbox sees {', '.join(bound)} (as {inside})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.batch.slurm", description="The array tasks' preamble.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preflight", help="check that this node can grade officially, with exactly its GPUs")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the task was allocated")
    p.add_argument("--allow-unsandboxed", action="store_true", help="accept degraded isolation")
    args = parser.parse_args(argv)
    ok, line = preflight(args.gpus, args.allow_unsandboxed)
    print(f"grader slurm: preflight: {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 3


if __name__ == "__main__":
    raise SystemExit(main())
