"""``grader slurm``: grade a class as a Slurm job array on the batch store, then merge.

The grader writes two batch scripts under ``OUT/.slurm/``: an array whose task K grades shard
K+1 of N (``grader batch --shard``) into the shared OUT, and a merge job (``grader batch
--merge-only``) that writes summary.md, gradebook.csv and histogram.png from every stored
result. The merge depends on the array with ``afterany``: ``afterok`` on an array with one
failed task never becomes satisfiable and stays pending for ever. A task that dies, times out
or is preempted is run again with ``grader slurm --resubmit K``: the store skips the students
already graded. Shards follow a plan written when the array is submitted (balanced sizes, or
one student per task).

The secret seed never goes into a script, onto a command line or into a job's environment
(slurmctld stores all three, and ``scontrol`` and ``sacct`` show them): it is written to
``OUT/.slurm/secret-seed`` with mode 0600 and the job reads it through
``GRADER_SECRET_SEED_FILE``. ``sbatch`` runs without ``GRADER_SECRET_SEED`` in its environment,
so no ``--export`` (typed, in a script, or ``SBATCH_EXPORT`` set by the site) can ship it.

Each array task first runs ``python -m grader.batch.slurm preflight``: ``--out`` must be
writable with working file locks, the sandbox must start on the node (in the tier the TA
required), and must see and open exactly the task's GPUs; else the task stops at once with a
message saying which, and the node is excluded from the array's pending tasks so that a bad
node cannot fail them one after the other (with no other node left, they are cancelled and the
merge says who is not graded).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from grader import __version__
from grader.atomic import write_atomic
from grader.flags import count, positive
from grader.errors import InfrastructureError, OutputError, UsageError
from grader.seeds import SECRET_ENV, SECRET_FILE_ENV, secret_from_env, secret_from_file

if TYPE_CHECKING:
    from grader.manifest import LabManifest

SLURM_DIR = ".slurm"
SECRET_FILE = "secret-seed"
GRADE_SCRIPT = "grade.sbatch"
MERGE_SCRIPT = "merge.sbatch"
TIERS = ("bubblewrap", "process")
PER_STUDENT = "student"
OWN_DIRECTIVES = ("--array", "--export", "--output", "--error", "--job-name", "--dependency", "--wrap", "--parsable")
"""Directives the scripts set themselves (``--export`` keeps the secret out): not passed through."""


@dataclass
class SlurmPlan:
    """What the job array grades, where, and what it asks Slurm for."""

    folder: Path
    out: Path
    lab_id: str
    exercises: Path
    tasks: int
    gpus_per_task: int = 0
    gpu_type: str | None = None
    cpus_per_task: int = 1
    mem: str | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    directives: list[str] = field(default_factory=list)
    """Further ``#SBATCH`` options, passed through as given (``--sbatch``)."""
    seed: int | None = None
    allow_unsandboxed: bool = False
    tier: str | None = None
    """The sandbox tier every task must grade in (``--require-tier``); None: any official one."""
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
    for flag, value in (("partition", plan.partition), ("account", plan.account), ("qos", plan.qos), ("time", time),
                        ("exclude", plan.exclude)):  # fmt: skip
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += [f"#SBATCH {directive}" for directive in plan.directives]
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
        lines.append(f"#SBATCH --gres=gpu:{plan.gpu_type + ':' if plan.gpu_type else ''}{plan.gpus_per_task}")
    if plan.mem:
        lines.append(f"#SBATCH --mem={plan.mem}")
    if plan.constraint:
        lines.append(f"#SBATCH --constraint={plan.constraint}")
    preflight = f'"$PYTHON" -m grader.batch.slurm preflight --gpus {plan.gpus_per_task} --out {_q(plan.out_abs)}'
    if plan.tier:
        preflight += f" --tier {plan.tier}"
    if plan.allow_unsandboxed:
        preflight += " --allow-unsandboxed"
    lines += [
        f"# Written by `grader slurm` (grader {__version__}). Task K grades shard K+1 of {plan.tasks} of",
        f"# {plan.folder_abs} into {plan.out_abs}. A task that failed is run again with",
        "# `grader slurm ... --resubmit K` (students already graded are skipped); do not sbatch this",
        "# file by hand from a shell that holds the secret seed. The seed is read from a 0600 file.",
    ]
    lines += _environment(plan)
    lines += [
        f'SHARD="$((SLURM_ARRAY_TASK_ID + 1))/{plan.tasks}"',
        'echo "grader slurm: shard $SHARD on $(hostname), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}, '
        'SLURM_JOB_GPUS=${SLURM_JOB_GPUS-unset}"',
        "# Preamble: --out writable, the sandbox starts here and sees only this task's GPUs; if not, the",
        "# node is excluded from the array's pending tasks and this task stops.",
        f"{preflight} || exit 3",
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
        f"# Written by `grader slurm` (grader {__version__}). Submitted after the array with",
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
        grade, merge = folder / GRADE_SCRIPT, folder / MERGE_SCRIPT
        grade.write_text(array_script(plan), encoding="utf-8")
        merge.write_text(merge_script(plan), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write the job scripts there ({exc.strerror or exc})") from None
    return grade, merge


def check_out(out: Path) -> None:
    """``out`` can be written and locked (the store's locks need ``flock``); OutputError saying
    what to fix if not. Run where the grading will run: the login node and each task's node."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{socket.gethostname()}-{os.getpid()}"
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot write there ({exc.strerror or exc}); pick a folder you can write, on a "
                          "file system every node sees") from None  # fmt: skip
    try:
        os.write(fd, b"grader\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        what = "file locks do not work there" if not isinstance(exc, BlockingIOError) else "cannot lock there"
        raise OutputError(f"--out {out}: {what} ({exc.strerror or exc}); use a file system with flock "
                          "(NFSv4, GPFS, Lustre mounted with -o flock)") from None  # fmt: skip
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            probe.unlink()


def sbatch_path() -> str:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UsageError("sbatch is not on PATH: run this on a Slurm login node, or use --print and submit by hand")
    return sbatch


def scrubbed_env() -> dict[str, str]:
    """This process's environment without the secret seed: what sbatch may see (and without an
    ``SBATCH_EXPORT`` that would set it: the scripts' own ``--export`` applies then)."""
    return {k: v for k, v in os.environ.items() if k != SECRET_ENV and not (k == "SBATCH_EXPORT" and SECRET_ENV in v)}


def _sbatch(args: list[str]) -> str:
    """Run sbatch --parsable; the job id (without a cluster name)."""
    sbatch = sbatch_path()
    try:
        proc = subprocess.run([sbatch, "--parsable", *args], capture_output=True, text=True, env=scrubbed_env(), timeout=120)
    except subprocess.TimeoutExpired:
        raise InfrastructureError("sbatch did not answer within 120 s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise InfrastructureError(f"sbatch {' '.join(args)} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    job = proc.stdout.strip().split(";")[0]
    if not job.isdigit():
        raise InfrastructureError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    return job


def submit(
    grade: Path, merge: Path, tasks: str | None = None, grade_options: list[str] = (), merge_options: list[str] = ()
) -> tuple[str, str]:
    """Submit the array (only the tasks ``tasks`` names, e.g. ``3`` or ``1,4-5``: a resubmission),
    then the merge after it whatever its outcome; both job ids. The options go before each
    script, overriding its ``#SBATCH`` lines."""
    array = _sbatch([*([f"--array={tasks}"] if tasks else []), *grade_options, str(grade)])
    try:
        merged = _sbatch([f"--dependency=afterany:{array}", *merge_options, str(merge)])
    except (UsageError, InfrastructureError) as exc:
        raise InfrastructureError(f"the array is job {array}, but the merge could not be submitted: {exc}") from None
    return array, merged


# -- the command line: grader slurm ----------------------------------------------------------------


def _tasks(text: str) -> int | str:
    if text == PER_STUDENT:
        return PER_STUDENT
    if not text.strip().lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of tasks or '{PER_STUDENT}', got {text!r}")
    return positive(text)


ARRAY_INDICES = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``grader slurm``."""
    p.add_argument("folder", type=Path, help="the submissions, as for grader batch (on a file system the nodes share)")
    p.add_argument("--exercise", "-e", required=True, help="lab id or unambiguous prefix")
    p.add_argument("--out", type=Path, help="output folder, shared by the nodes (default: reports/<lab-id>/batch-<folder name>/)")
    p.add_argument("--tasks", "-n", type=_tasks, help=f"array tasks: the class is split into this many shards of equal size, "
                   f"or '{PER_STUDENT}' for one task per student (the default for a lab with GPU checks)")  # fmt: skip
    p.add_argument("--gpus-per-task", type=count, help="GPUs per task, as --gres=gpu:G (default: 1 for a lab with GPU checks, else 0)")
    p.add_argument("--gpu-type", help="a GRES type for the GPUs, as --gres=gpu:TYPE:G (e.g. a100)")
    p.add_argument("--cpus-per-task", type=positive, help="CPUs per task, also its grading jobs (default 1)")
    p.add_argument("--mem", help="memory per task, as sbatch --mem (e.g. 16G)")
    p.add_argument("--partition", "-p", help="Slurm partition")
    p.add_argument("--time", "-t", help="time limit per task, e.g. 01:00:00")
    p.add_argument("--account", "-A", help="Slurm account to charge")
    p.add_argument("--qos", "-q", help="Slurm quality of service")
    p.add_argument("--constraint", "-C", help="node features, e.g. a GPU model, so every score is timed on one kind")
    p.add_argument("--exclude", "-x", help="nodes not to grade on, as sbatch --exclude (e.g. gpu[07-08])")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="another #SBATCH option for both jobs, written --sbatch=OPTION (repeatable), e.g. --sbatch=--reservation=exam")  # fmt: skip
    p.add_argument("--require-tier", nargs="?", const="here", choices=[*TIERS, "here"],
                   help="every task must grade in this sandbox tier ('here' or no value: the tier of this node), "
                        "so no node grades its share in a weaker one")  # fmt: skip
    p.add_argument("--seed", type=int, help="public seed of the inputs (default: the lab's fixed seed)")
    p.add_argument("--secret-file", type=Path, help=f"the secret seed, from a file only you can read (mode 0600; or ${SECRET_FILE_ENV})")
    p.add_argument("--public-seed", action="store_true", help="grade with the public seed only: no secret seed (students can know the inputs)")
    p.add_argument("--allow-unsandboxed", action="store_true", help="let the tasks grade in a tier that leaves solutions, secret or network within reach (degraded, said in every result)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--print", dest="print_only", action="store_true", help="write and print the scripts; submit nothing")
    mode.add_argument("--submit", action="store_true", help="write the scripts and submit them: the array, then the merge")
    mode.add_argument("--resubmit", metavar="K", help="submit array tasks K again as they were submitted (e.g. 3 or 1,4-5; "
                      "--time, --mem, --partition... given now override the scripts'), then the merge")  # fmt: skip


def _secret(args: argparse.Namespace, out: Path, submitting: bool) -> tuple[Path | None, str]:
    """The secret seed's file under OUT/.slurm/ (None: public seed only), and a line saying where it came from."""
    existing = out.resolve() / SLURM_DIR / SECRET_FILE
    if args.secret_file is not None:
        secret, source = secret_from_file(str(args.secret_file), f"--secret-file {args.secret_file}"), str(args.secret_file)
    else:
        secret, source = secret_from_env(), SECRET_ENV if os.environ.get(SECRET_ENV) else os.environ.get(SECRET_FILE_ENV, "")
    if secret and args.public_seed:
        raise UsageError("--public-seed grades without the secret seed, but one is given: drop one of them")
    if secret:
        try:
            before = secret_from_file(str(existing), str(existing)) if existing.is_file() else None
        except UsageError:
            before = None
        if before is not None and before != secret:
            note = f"; it replaces the one in {existing}, so every student is graded again"
        else:
            note = ""
        path = write_secret(out, secret)
        return path, f"secret seed: from {source}, in {path} (mode 0600); the jobs read it from there{note}"
    if existing.is_file() and not args.public_seed:
        return existing, f"secret seed: the one already in {existing} (mode 0600); the jobs read it from there"
    if args.public_seed:
        return None, "warning: --public-seed: inputs come from the public seed only"
    if submitting:
        raise UsageError(
            f"no secret seed: give one with --secret-file FILE (mode 0600) or ${SECRET_FILE_ENV}, or pass --public-seed "
            "to grade with the public seed only (students can know its inputs)"
        )
    return None, f"warning: no secret seed ({SECRET_ENV} is not set): inputs come from the public seed only"


def _submitted_tasks(out: Path) -> int | None:
    try:
        text = (out.resolve() / SLURM_DIR / GRADE_SCRIPT).read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^#SBATCH --array=0-(\d+)$", text, re.M)
    return int(match[1]) + 1 if match else None


def _indices(text: str, tasks: int) -> list[int]:
    if not ARRAY_INDICES.match(text):
        raise UsageError(f"--resubmit {text!r}: expected array task indices, e.g. 3 or 1,4-5")
    found = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        found += range(int(low), int(high or low) + 1)
    if not found or max(found) >= tasks:
        raise UsageError(f"--resubmit {text!r}: the array's tasks are 0 to {tasks - 1}")
    return found


def _tier_here(gpus: int) -> str:
    from grader.sandbox.launchers import assess
    from grader.sandbox.tiers import probe

    try:
        return assess(probe(sys.executable, gpus > 0)).mode
    except RuntimeError as exc:
        raise UsageError(f"--require-tier: no sandbox starts on this node ({exc}); name the tier (bubblewrap or process)") from None


def _check_directives(directives: list[str]) -> None:
    for directive in directives:
        flag = directive.split("=", 1)[0].split()[0] if directive.strip() else ""
        if not flag.startswith("-") or "\n" in directive:
            raise UsageError(f"--sbatch {directive!r}: expected one sbatch option, e.g. --sbatch=--reservation=exam")
        if flag in OWN_DIRECTIVES:
            raise UsageError(f"--sbatch {directive!r}: grader slurm sets {flag} itself")


def command(args: argparse.Namespace, manifest: LabManifest, out: Path, exercises: Path) -> int:
    """``grader slurm``: write the scripts, then print them or submit them; or resubmit some tasks."""
    from grader.batch.layouts import submissions_to_grade
    from grader.batch.shard import write_plan
    from grader.batch.store import STATE
    from grader.manifest import Hardware

    _check_directives(args.sbatch)
    if args.resubmit is not None:
        return _resubmit(args, manifest, out)
    submitting = not args.print_only
    if submitting:
        sbatch_path()
    gpu_lab = any(c.requires is Hardware.gpu for c in manifest.checks.values())
    gpus = args.gpus_per_task if args.gpus_per_task is not None else (1 if gpu_lab else 0)
    if args.gpu_type and not gpus:
        raise UsageError("--gpu-type needs GPUs: give --gpus-per-task 1 or more")
    wanted = args.tasks if args.tasks is not None else (PER_STUDENT if gpu_lab else None)
    if wanted is None:
        raise UsageError(f"--tasks is required for {manifest.id} (no GPU checks): a number of tasks, or '{PER_STUDENT}'")
    if submitting:
        check_out(out)
    entries, _ = submissions_to_grade(args.folder, manifest, exclude=out)
    students = [e.student for e in entries]
    tasks = len(students) if wanted == PER_STUDENT else int(wanted)
    secret_file, note = _secret(args, out, submitting)
    tier = _tier_here(gpus) if args.require_tier == "here" else args.require_tier
    plan = SlurmPlan(
        folder=args.folder, out=out, lab_id=manifest.id, exercises=exercises, tasks=tasks, gpus_per_task=gpus,
        gpu_type=args.gpu_type, cpus_per_task=args.cpus_per_task or 1, mem=args.mem, partition=args.partition,
        time=args.time, account=args.account, qos=args.qos, constraint=args.constraint, exclude=args.exclude,
        directives=list(args.sbatch), seed=args.seed, allow_unsandboxed=args.allow_unsandboxed, tier=tier,
        secret_file=secret_file,
    )  # fmt: skip
    grade, merge = write_scripts(plan)
    try:
        write_plan(out.resolve() / STATE, tasks, students)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the shard plan there ({exc.strerror or exc})") from None
    print(f"grader slurm: {note}", file=sys.stderr)
    if tier:
        print(f"grader slurm: every task must grade in the {tier} sandbox (a node that cannot stops at its preflight)", file=sys.stderr)
    if args.print_only:
        for path in (grade, merge):
            print(f"# ---- {path}")
            print(path.read_text(encoding="utf-8"))
        print("# Submit with `grader slurm ... --submit` (it keeps the secret seed out of sbatch's environment), or by hand")
        print("# from a shell WITHOUT the secret in its environment: the array, then the merge after it whatever its outcome:")
        print(f"array=$(env -u {SECRET_ENV} sbatch --parsable {grade}) && env -u {SECRET_ENV} sbatch --dependency=afterany:${{array%%;*}} {merge}")
        return 0
    array, merged = submit(grade, merge)
    _in_progress(manifest.id, out, array, merged)
    print(f"array job {array} ({tasks} tasks, {gpus} GPU(s) each); merge job {merged} (after the array, whatever its outcome)")
    print(f"Watch: squeue -j {array},{merged} · logs: {plan.slurm_dir / 'logs'}/ · results: {plan.out_abs}/summary.md once job {merged} ends")
    return 0


SHAPING = ("gpus_per_task", "gpu_type", "cpus_per_task", "seed", "require_tier", "allow_unsandboxed", "secret_file", "public_seed")
"""Options that decide how a task grades: a resubmission runs the tasks as they were submitted."""


def _resubmit(args: argparse.Namespace, manifest: LabManifest, out: Path) -> int:
    """Submit tasks ``args.resubmit`` of the array in ``out`` again, then the merge: the scripts as
    they were submitted (the same shards, secret and checks); resource options given now are
    handed to sbatch, which lets its command line override a script's ``#SBATCH`` lines."""
    sbatch_path()
    folder = out.resolve() / SLURM_DIR
    tasks = _submitted_tasks(out)
    if tasks is None:
        raise UsageError(f"--resubmit: nothing was submitted into {out} (no {SLURM_DIR}/{GRADE_SCRIPT}); use --submit")
    if args.tasks not in (None, tasks):
        raise UsageError(f"--resubmit: the array in {out} has {tasks} tasks, not {args.tasks}: a student's shard depends on it")
    changed = [f"--{name.replace('_', '-')}" for name in SHAPING if getattr(args, name) not in (None, False)]
    if changed:
        raise UsageError(f"--resubmit runs the tasks as they were submitted: {', '.join(changed)} would change how they grade; "
                         "--submit again instead (students already graded are skipped)")  # fmt: skip
    _indices(args.resubmit, tasks)
    existing = folder / SECRET_FILE
    secret = secret_from_env()
    if secret and existing.is_file() and secret != secret_from_file(str(existing), str(existing)):
        raise UsageError(
            f"the secret seed in your environment is not the one the array was graded with ({existing}): a resubmitted "
            f"task uses that one; unset {SECRET_ENV} and {SECRET_FILE_ENV}"
        )
    check_out(out)
    resources = [f"--{flag}={value}" for flag, value in (("partition", args.partition), ("account", args.account),
                 ("qos", args.qos), ("exclude", args.exclude)) if value] + list(args.sbatch)  # fmt: skip
    grading = [f"--{flag}={value}" for flag, value in (("time", args.time), ("mem", args.mem), ("constraint", args.constraint)) if value]
    array, merged = submit(folder / GRADE_SCRIPT, folder / MERGE_SCRIPT, args.resubmit, resources + grading, resources)
    _in_progress(manifest.id, out, array, merged)
    print(f"array job {array} (tasks {args.resubmit} of {tasks}); merge job {merged} (after the array, whatever its outcome)")
    print(f"Watch: squeue -j {array},{merged} · logs: {folder / 'logs'}/ · results: {out.resolve()}/summary.md once job {merged} ends")
    return 0


def _in_progress(lab_id: str, out: Path, array: str, merged: str) -> None:
    """summary.md says the class is being graded, so no one reads the last run's as this one's."""
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    text = (
        f"# {lab_id}: grading in progress\n\n"
        f"Array job {array} and merge job {merged} were submitted at {when}. The merge rewrites this file, "
        f"gradebook.csv and histogram.png when the array ends (until then those two are from the last merge). "
        f"Watch: `squeue -j {array},{merged}`; logs in `{out.resolve() / SLURM_DIR / 'logs'}/`.\n"
    )
    with contextlib.suppress(OSError):  # checked writable a moment ago; a failure here costs only this note
        write_atomic(out.resolve() / "summary.md", text)


# -- the preamble each array task runs on its node -------------------------------------------------

PROBE_DEVICES = (
    "import glob, json, os\n"
    "errors = {}\n"
    "for path in sorted(glob.glob('/dev/nvidia[0-9]*')):\n"
    "    try:\n"
    "        os.close(os.open(path, os.O_RDWR))\n"
    "    except OSError as exc:\n"
    "        errors[path] = exc.strerror\n"
    "print(json.dumps([sorted(glob.glob('/dev/nvidia[0-9]*')), os.environ.get('CUDA_VISIBLE_DEVICES'), errors]))"
)
"""Run in the sandbox: the GPU device files there, the CUDA_VISIBLE_DEVICES it sees, and which of
the files would not open (a device cgroup denies a GPU the task was not given: EPERM)."""


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


def preflight(gpus: int, allow_unsandboxed: bool = False, out: Path | None = None, tier: str | None = None) -> tuple[bool, str]:
    """Can this node grade officially into ``out``, in the ``tier`` required, seeing and opening
    exactly its allocated GPUs? (ok, one line to print)."""
    from grader.sandbox.launchers import NVIDIA_GPU_FILE, assess, gpu_devices, refusal
    from grader.sandbox.tiers import probe, run_in_sandbox

    node = socket.gethostname()
    if out is not None:
        try:
            check_out(out)
        except OutputError as exc:
            return False, f"node {node}: {exc}"
    launcher = assess(probe(sys.executable, gpus > 0))
    if launcher.degraded and not allow_unsandboxed:
        hint = _userns_diagnosis() if os.geteuid() != 0 else ""
        return False, (
            f"node {node}: official grading cannot run here: {refusal(launcher)}"
            + (f"; {hint}: ask the cluster's admins to allow them for bwrap" if hint else "")
            + "; or grade on other nodes (sbatch --exclude / --constraint)"
        )
    if tier is not None and launcher.mode != tier:
        why = launcher.notes.get(tier)
        return False, f"node {node}: the sandbox here is {launcher.mode}, not the {tier} required (--require-tier)" + (f": {why}" if why else "")
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
            seen, seen_visible, refused = json.loads(line) if ok else (None, None, {})
        except ValueError:
            seen, seen_visible, refused = None, None, {}
        if seen != bound or seen_visible != inside:
            return False, f"node {node}: the sandbox sees {seen} with CUDA_VISIBLE_DEVICES={seen_visible}, expected {bound} with {inside} ({line})"
    else:
        refused = {}
        for path in bound:
            try:
                os.close(os.open(path, os.O_RDWR))
            except OSError as exc:
                refused[path] = exc.strerror
    if refused:
        return False, (
            f"node {node}: CUDA_VISIBLE_DEVICES={visible}: the sandbox would get "
            + ", ".join(f"{path}, which does not open ({why})" for path, why in refused.items())
            + " (is it another task's GPU, denied by this task's device cgroup?)"
        )
    return True, f"node {node}: sandbox {sandbox}; CUDA_VISIBLE_DEVICES={visible}: the sandbox sees and opens {', '.join(bound)} (as {inside})"


def _scontrol(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, env=scrubbed_env())


def _hostnames(expression: str) -> list[str]:
    if not expression or expression == "(null)":
        return []
    proc = _scontrol("show", "hostnames", expression)
    return proc.stdout.split() if proc.returncode == 0 else []


def exclude_node(array: str, node: str, lock_dir: Path | None) -> str:
    """Keep ``node`` out of the pending tasks of array job ``array`` (after its preflight failed
    there); with no node of their partitions left, cancel them. What was done, in one line."""
    with contextlib.ExitStack() as stack:
        if lock_dir is not None:  # two tasks failing at once must not overwrite each other's exclusion
            with contextlib.suppress(OSError):
                fd = os.open(lock_dir / "exclude.lock", os.O_CREAT | os.O_RDWR, 0o600)
                stack.callback(os.close, fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
        proc = _scontrol("-o", "show", "job", array)
        pending = [
            dict(f.split("=", 1) for f in line.split() if "=" in f)
            for line in proc.stdout.splitlines() if " JobState=PENDING " in f" {line} "
        ]  # fmt: skip
        if not pending:
            return "no task of the array is pending"
        excluded = set(_hostnames(pending[0].get("ExcNodeList", ""))) | {node}
        nodes: set[str] = set()
        for partition in pending[0].get("Partition", "").split(","):
            listed = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%N"], capture_output=True, text=True,
                                    timeout=60, env=scrubbed_env())  # fmt: skip
            for expression in listed.stdout.split():
                nodes.update(_hostnames(expression))
        if nodes and not nodes - excluded:
            cancel = subprocess.run(["scancel", "--state=PENDING", array], capture_output=True, text=True,
                                    timeout=60, env=scrubbed_env())  # fmt: skip
            if cancel.returncode != 0:
                return f"could not cancel the pending tasks ({cancel.stderr.strip()[:200]})"
            return (f"no other node of partition {pending[0].get('Partition')} is left, so the array's pending tasks were "
                    "cancelled; the merge lists who is not graded")  # fmt: skip
        update = _scontrol("update", f"JobId={array}", f"ExcNodeList={','.join(sorted(excluded))}")
        if update.returncode != 0 and "no longer pending" not in update.stderr + update.stdout:
            return f"could not exclude it from the pending tasks ({(update.stderr or update.stdout).strip()[:200]})"
        return f"node {node} is excluded from the array's pending tasks (ExcNodeList={','.join(sorted(excluded))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.batch.slurm", description="The array tasks' preamble.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preflight", help="check that this node can grade officially, with exactly its GPUs")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the task was allocated")
    p.add_argument("--out", type=Path, help="the --out folder the task writes into")
    p.add_argument("--tier", choices=TIERS, help="the sandbox tier required")
    p.add_argument("--allow-unsandboxed", action="store_true", help="accept degraded isolation")
    args = parser.parse_args(argv)
    ok, line = preflight(args.gpus, args.allow_unsandboxed, args.out, args.tier)
    print(f"grader slurm: preflight: {line}", file=sys.stdout if ok else sys.stderr, flush=True)
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if not ok and array:
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
        lock_dir = args.out / SLURM_DIR if args.out is not None and (args.out / SLURM_DIR).is_dir() else None
        print(f"grader slurm: preflight: {exclude_node(array, node, lock_dir)}", file=sys.stderr)
    return 0 if ok else 3


if __name__ == "__main__":
    raise SystemExit(main())
