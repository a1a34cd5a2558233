"""``grader slurm`` on a real Slurm: a job array and its merge, tasks cancelled and resubmitted.

These tests need a running Slurm with two GPUs in gres: ``.ci/slurm-up`` starts a private
single-node one (fake GPUs as device files) and prints the lines to source; ``.ci/slurm-down``
stops it. ``.ci/run`` runs them against both of its configurations: "plain" (no cgroups, jobs as
root) and "cgroup" (task/cgroup with ConstrainDevices=yes, typed GPUs listed in gres.conf against
the order of their numbers, and every TA command and job run by a non-root user,
``$GRADER_SLURM_USER``). Without a Slurm they are skipped, saying why, unless
``GRADER_REQUIRE_SLURM=1`` (CI sets it), which makes a missing Slurm a failure.

Job states are read with squeue while jobs are queued or running and with scontrol (sacct
where accounting exists) once they end; ``sbatch --wait`` is never trusted, since it can
return 0 for a job that was cancelled.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import LAB01, ROOT, wrong_file

from grader.batch.shard import read_plan
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.sandbox.allocation import expand

pytestmark = pytest.mark.slurm

REQUIRE_ENV = "GRADER_REQUIRE_SLURM"
SECRET = "slurm-test-secret-7f3a9c"
TASKS = 4
WAIT_S = 240.0
TIMED_KINDS = ("cpu-speedup", "gpu-speed")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
GRES = re.compile(r"gpu:(?:([^:,(\s]+):)?(\d+)")


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _why_no_slurm() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm is not installed here (no sbatch/sinfo on PATH); .ci/slurm-up installs and starts one"
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if not os.path.isfile(conf):
        return f"no Slurm configuration at {conf}: run .ci/slurm-up and export the SLURM_CONF it prints"
    try:
        proc = _run("sinfo", "-h", "-o", "%G %t", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer in 20 s ({conf})"
    if proc.returncode != 0:
        return f"no Slurm controller answers ({conf}: {proc.stderr.strip()[:200]}); run .ci/slurm-up and export SLURM_CONF"
    match = GRES.search(proc.stdout)
    if not match or int(match[2]) < 2:
        return f"the Slurm here has no node with 2 GPUs in gres (sinfo: {proc.stdout.strip()!r}); .ci/slurm-up makes one"
    return None


@dataclass
class Cluster:
    """The running Slurm: its configuration, and how the TA runs commands on it."""

    config: dict[str, str]
    user: str | None
    """The non-root TA every command and job runs as; None: the tests' own user."""
    python: str
    gpu_type: str | None
    made: list[Path] = field(default_factory=list)

    @property
    def constrained(self) -> bool:
        return "task/cgroup" in self.config.get("TaskPlugin", "")

    def folder(self) -> Path:
        """A fresh folder the TA owns (and the tests, as root, can read)."""
        path = Path(tempfile.mkdtemp(prefix="grader-slurm-test-", dir=os.environ.get("GRADER_SLURM_TEST_TMP", "/tmp")))
        self.made.append(path)
        path.chmod(0o755)
        return path

    def own(self, *paths: Path) -> None:
        if self.user is not None:
            _run("chown", "-R", self.user, *map(str, paths))

    def as_ta(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the TA, in an environment built from this one plus ``env``."""
        full = dict(os.environ, **(env or {}))
        if self.user is not None:
            full.update(HOME=tempfile.gettempdir(), USER=self.user, LOGNAME=self.user)
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full)

    def grader(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.as_ta([self.python, "-m", "grader", *map(str, args)], env)

    def sbatch(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = self.as_ta(["sbatch", "--parsable", *args], env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]


def _ta_python(user: str) -> str:
    """An interpreter the TA can run, with this one's packages: a TA's virtual environment. The
    tests' own interpreter may sit where the TA cannot read it (a pyenv under /root); then a
    venv of the system Python of the same version, whose site-packages reach this one's."""
    if subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", "import grader"], cwd=ROOT,
                      capture_output=True).returncode == 0:  # fmt: skip
        return sys.executable
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin:/bin")
    if system is None:
        pytest.fail(f"no Python {sys.version_info.major}.{sys.version_info.minor} that {user} can run (this one, {sys.executable}, it cannot)")
    venv = Path(tempfile.mkdtemp(prefix="grader-ta-venv-"))
    venv.chmod(0o755)
    _run(system, "-m", "venv", "--without-pip", str(venv))
    packages = next((venv / "lib").glob("python*/site-packages"))
    (packages / "grader-tests.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()))
    python = str(venv / "bin" / "python")
    proc = subprocess.run(["runuser", "-u", user, "--", python, "-c", "import grader"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{user} cannot import the grader from {ROOT} and {site.getsitepackages()}: put the checkout where "
                    f"other users can read it ({proc.stderr.strip().splitlines()[-1:]})")  # fmt: skip
    return python


@pytest.fixture(scope="module")
def slurm() -> Cluster:
    """The running Slurm; skips (or fails, when required) without one."""
    why = _why_no_slurm()
    if why is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(why)
    config = {}
    for line in _run("scontrol", "show", "config").stdout.splitlines():
        key, _, value = line.partition("=")
        config[key.strip()] = value.strip()
    user = os.environ.get("GRADER_SLURM_USER") or None
    match = GRES.search(_run("sinfo", "-h", "-o", "%G").stdout)
    cluster = Cluster(config, user, _ta_python(user) if user else sys.executable, match[1] if match else None)
    if cluster.python != sys.executable:
        cluster.made.append(Path(cluster.python).parents[1])  # the TA's venv
    yield cluster
    for path in cluster.made:
        shutil.rmtree(path, ignore_errors=True)


# --- job states ----------------------------------------------------------------------------------


def _queued(jobs: set[str]) -> dict[str, str]:
    """Array tasks and jobs of ``jobs`` that squeue still lists, with their state."""
    out = _run("squeue", "-h", "-o", "%i %T").stdout
    return {i: s for i, s in (line.split() for line in out.splitlines() if line.strip()) if i.split("_")[0] in jobs}


def _final_states(job: str) -> dict[str, str]:
    """The end state of a job, or of each task of an array (``6_0``: ``COMPLETED``; tasks
    cancelled while pending may be one record, ``6_[2-3]``)."""
    proc = _run("scontrol", "-o", "show", "job", job, check=False)
    states = {}
    for line in proc.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        task = fields.get("ArrayTaskId")
        key = f"{fields.get('ArrayJobId')}_{task}" if task not in (None, "(null)") else fields.get("JobId", job)
        states[key] = fields.get("JobState", "?")
    if not states:  # purged from slurmctld's memory: accounting, where the cluster has it
        acct = _run("sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State", check=False)
        states = {i: s.split()[0] for i, s in (l.split("|") for l in acct.stdout.splitlines() if "|" in l)}
    return states


def _wait(jobs: list[str], out: Path) -> dict[str, str]:
    """Wait until none of ``jobs`` is queued or running; the end state of each job and task."""
    deadline = time.monotonic() + WAIT_S
    while _queued(set(jobs)):
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-600:] for p in sorted((out / ".slurm" / "logs").glob("*.out")))
            raise AssertionError(f"jobs {jobs} still queued after {WAIT_S:g} s: {_queued(set(jobs))}\n{logs}")
        time.sleep(0.2)
    states: dict[str, str] = {}
    for job in jobs:
        states.update(_final_states(job))
    assert all(s in FINAL for s in states.values()), states
    return states


@pytest.fixture
def cancel_leftovers():
    """Cancel whatever a failing test left in the queue."""
    jobs: list[str] = []
    yield jobs
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)


# --- helpers -------------------------------------------------------------------------------------


def _class(folder: Path, count: int = 20) -> list[str]:
    """``count`` lab-01 submissions (20 at most): solutions, accepted alternatives, starters and wrong files."""
    files = [LAB01 / "solution.py"] * 6 + sorted((LAB01 / "accepted").glob("*.py")) + [LAB01 / "starter.py"] * 3
    sources = [(path.stem, path.read_text()) for path in files]
    sources += [(p.stem, wrong_file(p.stem)) for p in sorted((LAB01 / "wrong").glob("*.patch"))][: 20 - len(sources)]
    assert len(sources) == 20
    folder.mkdir(parents=True)
    names = []
    for i, (stem, text) in enumerate(sources[:count]):
        name = f"s{i:02d}_{stem}"
        (folder / f"{name}.py").write_text(text)
        names.append(name)
    return names


def _secret_file(cluster: Cluster, where: Path) -> Path:
    path = where / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    cluster.own(path)
    return path


SUBMITTED = re.compile(r"array job (\d+) \((.*)\); merge job (\d+) \(after the array, whatever its outcome\)")


def _submitted(proc: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert proc.returncode == 0, proc.stderr
    match = SUBMITTED.search(proc.stdout)
    assert match, proc.stdout
    return match[1], match[3]


def _rows(out: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO((out / "gradebook.csv").read_text())))
    students = [r["student"] for r in rows]
    assert len(students) == len(set(students)), f"a student appears twice: {students}"
    return {r["student"]: r for r in rows}


def _untimed(row: dict[str, str], timed: list[str]) -> dict[str, str]:
    """A gradebook row without the timed checks, their share of the score, or where it was graded."""
    kept = {k: v for k, v in row.items() if k not in (*timed, "score", "percent", "node", "gpu", "other_gpu")}
    kept["score without timed checks"] = f"{float(row['score']) - sum(float(row[t] or 0) for t in timed):g}"
    return kept


def _checks(out: Path, student: str, timed: list[str]) -> list[tuple[str, str, float, str]]:
    result = json.loads((out / student / "result.json").read_text())
    return [(c["id"], c["status"], c["score"], c["message"]) for c in result["checks"] if c["id"] not in timed]


def _records(out: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in (out / ".state").glob("*.json") if not p.stem.startswith("shards-of-")}


def _leaks(cluster: Cluster) -> list[str]:
    """Files of slurmctld's and slurmd's state that hold the secret."""
    found = []
    for key in ("StateSaveLocation", "SlurmdSpoolDir"):
        found += _run("grep", "-rl", SECRET, cluster.config[key], check=False).stdout.split()
    return found


def _log(out: Path, job: str) -> str:
    return (out / ".slurm" / "logs" / f"grade-{job}.out").read_text()


def _failed_logs(out: Path, states: dict[str, str]) -> str:
    """The end of the log of every task that did not complete, for a failing assertion's message."""
    logs = [f"{job}: {_log(out, job)[-1500:]}" for job, state in states.items() if state != "COMPLETED" and "[" not in job]
    return "\n".join(logs)


# --- the scripts, without a Slurm ----------------------------------------------------------------


def _scripts(out: Path) -> tuple[str, str]:
    return (out / ".slurm" / "grade.sbatch").read_text(), (out / ".slurm" / "merge.sbatch").read_text()


def test_print_writes_scripts_that_keep_the_secret_in_a_0600_file(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    _class(folder)
    monkeypatch.setenv("GRADER_SECRET_SEED", SECRET)
    code, printed, err = run_cli(
        "slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 4, "--partition", "gpu", "--time", "00:30:00",
        "--account", "cs599", "--qos", "high", "--constraint", "h100", "--cpus-per-task", 2, "--mem", "16G",
        "--exclude", "gpu[07-08]", "--sbatch=--reservation=exam", "--sbatch=--mail-type=END", "--require-tier",
        "bubblewrap", "--print",
    )  # fmt: skip
    assert code == 0, err
    grade, merge = _scripts(out)
    secret = out / ".slurm" / "secret-seed"
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.read_text() == SECRET + "\n"
    assert (out / ".slurm").stat().st_mode & 0o777 == 0o700
    assert SECRET not in grade + merge + printed + err
    for line in ("#SBATCH --array=0-3", "#SBATCH --partition=gpu", "#SBATCH --time=00:30:00", "#SBATCH --account=cs599",
                 "#SBATCH --qos=high", "#SBATCH --constraint=h100", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=16G",
                 "#SBATCH --exclude=gpu[07-08]", "#SBATCH --reservation=exam", "#SBATCH --mail-type=END",
                 "#SBATCH --export=ALL,GRADER_SECRET_SEED=", f"export GRADER_SECRET_SEED_FILE={secret.resolve()}",
                 f"PYTHON={sys.executable}", 'SHARD="$((SLURM_ARRAY_TASK_ID + 1))/4"',
                 f"-m grader.batch.slurm preflight --gpus 0 --out {out.resolve()} --tier bubblewrap || exit 3",
                 f'--out {out.resolve()} --shard "$SHARD" --jobs "${{SLURM_CPUS_PER_TASK:-1}}"'):  # fmt: skip
        assert line in grade, line
    assert "--gres" not in grade  # lab-01 has no GPU check
    for line in ("#SBATCH --time=00:10:00", "#SBATCH --qos=high", "#SBATCH --exclude=gpu[07-08]", "#SBATCH --reservation=exam",
                 f"--out {out.resolve()} --merge-only"):  # fmt: skip
        assert line in merge, line
    assert "--mem" not in merge and "--constraint" not in merge
    assert "env -u GRADER_SECRET_SEED sbatch --parsable" in printed and "--dependency=afterany:" in printed
    assert grade in printed and merge in printed
    # The scripts are valid bash.
    for script in (out / ".slurm" / "grade.sbatch", out / ".slurm" / "merge.sbatch"):
        assert _run("bash", "-n", str(script), check=False).returncode == 0
    # Shards of equal size, kept in a plan every task reads (a hash alone gave 7/11/10/2 of 30).
    plan = read_plan(out / ".state", 4)
    assert len(plan) == 20 and sorted(Counter(plan.values()).values()) == [5, 5, 5, 5]

    # Later, without the variable: the file already there is used; a GPU lab asks for a GPU a task,
    # one task per student by default, of the GRES type asked for.
    monkeypatch.delenv("GRADER_SECRET_SEED")
    code, _, err = run_cli("slurm", folder, "-e", "lab-05", "--out", out, "--gpu-type", "a100", "--print")
    assert code == 2 and "no submissions to grade (20 entries skipped" in err and "declares EXERCISE = 'lab-01-moe-routing'" in err, err
    for path in folder.glob("*.py"):  # the same class, handed in for lab-05
        path.write_text(path.read_text().replace('EXERCISE = "lab-01-moe-routing"', 'EXERCISE = "lab-05-fused-moe-kernel"'))
    code, _, err = run_cli("slurm", folder, "-e", "lab-05", "--out", out, "--gpu-type", "a100", "--print")
    assert code == 0 and "the one already in" in err, err
    grade, _ = _scripts(out)
    assert "#SBATCH --gres=gpu:a100:1" in grade and "preflight --gpus 1" in grade and "GRADER_SECRET_SEED_FILE" in grade
    assert "#SBATCH --array=0-19" in grade and sorted(Counter(read_plan(out / ".state", 20).values()).values()) == [1] * 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "2"], "one of the arguments --print --submit --resubmit is required"),
        (["--tasks", "2", "--print", "--submit"], "not allowed with argument"),
        (["--tasks", "0", "--print"], "must be at least 1"),
        (["--tasks", "some", "--print"], "expected a number of tasks or 'student'"),
        (["--print"], "--tasks is required for lab-01-moe-routing"),
        (["--tasks", "2", "--gpus-per-task", "-1", "--print"], "must be 0 or more"),
        (["--tasks", "2", "--gpu-type", "a100", "--print"], "--gpu-type needs GPUs"),
        (["--tasks", "2", "--sbatch=--export=ALL", "--print"], "grader slurm sets --export itself"),
        (["--tasks", "2", "--sbatch=reservation", "--print"], "expected one sbatch option"),
        (["--tasks", "2", "--resubmit", "1", "--print"], "not allowed with argument"),
        (["--tasks", "2", "--submit"], "sbatch is not on PATH: run this on a Slurm login node, or use --print"),
    ],
)
def test_slurm_bad_input_is_one_line_and_exit_2(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, message) -> None:
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "ada.py").write_text((LAB01 / "solution.py").read_text())
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    code, _, err = run_cli("slurm", tmp_path / "class", "-e", "lab-01", "--out", tmp_path / "out", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err


def _fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An sbatch on PATH that records its environment and answers a job id (these checks come before it runs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\nenv > {tmp_path / 'sbatch-env'}\necho 42\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return tmp_path / "sbatch-env"


def test_submit_refuses_without_a_secret_or_with_another_one_on_resubmit(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    _class(folder, 4)
    env_seen = _fake_sbatch(tmp_path, monkeypatch)
    monkeypatch.delenv("GRADER_SECRET_SEED", raising=False)
    monkeypatch.delenv("GRADER_SECRET_SEED_FILE", raising=False)
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 2, "--submit")
    assert code == 2 and "no secret seed: give one with --secret-file FILE (mode 0600)" in err and "--public-seed" in err
    assert not env_seen.exists()
    code, printed, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 2, "--public-seed", "--submit")
    assert code == 0 and "--public-seed: inputs come from the public seed only" in err and "array job 42" in printed
    assert "unset GRADER_SECRET_SEED_FILE" in _scripts(out)[0]
    assert "# lab-01-moe-routing: grading in progress" in (out / "summary.md").read_text()

    loose = tmp_path / "loose-secret"
    loose.write_text(SECRET)
    loose.chmod(0o644)
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 2, "--secret-file", loose, "--submit")
    assert code == 2 and "others may read it (mode 0644); chmod 600 it" in err
    loose.chmod(0o600)
    monkeypatch.setenv("GRADER_SECRET_SEED", "not-this-one")  # in the TA's shell, and SBATCH_EXPORT=ALL: neither reaches sbatch
    monkeypatch.setenv("SBATCH_EXPORT", "ALL")
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 2, "--secret-file", loose, "--submit")
    assert code == 0, err
    assert (out / ".slurm" / "secret-seed").read_text() == SECRET + "\n"
    assert "GRADER_SECRET_SEED=" not in env_seen.read_text() and "SBATCH_EXPORT=ALL" in env_seen.read_text()
    # A resubmitted task grades as it was submitted: with the same secret, shards and checks.
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--resubmit", "1")
    assert code == 2 and "is not the one the array was graded with" in err
    monkeypatch.delenv("GRADER_SECRET_SEED")
    (out / ".slurm" / "grade.sbatch").write_text(_scripts(out)[0] + "# as submitted\n")
    code, printed, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--resubmit", "1", "--time", "2:00:00")
    assert code == 0 and "tasks 1 of 2" in printed, err
    assert _scripts(out)[0].endswith("# as submitted\n")  # not rewritten
    assert "GRADER_SECRET_SEED=" not in env_seen.read_text()
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--resubmit", "2")
    assert code == 2 and "the array's tasks are 0 to 1" in err
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 3, "--resubmit", "1")
    assert code == 2 and "has 2 tasks, not 3" in err
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", out, "--gpus-per-task", 1, "--seed", 7, "--resubmit", "1")
    assert code == 2 and "--gpus-per-task, --seed would change how they grade; --submit again instead" in err


def test_submit_checks_that_out_is_writable_and_lockable(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.batch import slurm as module

    folder = tmp_path / "class"
    _class(folder, 2)
    _fake_sbatch(tmp_path, monkeypatch)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(readonly)]).returncode:
            pytest.skip("cannot mount a read-only tmpfs")
    else:
        readonly.chmod(0o555)
    try:
        code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", readonly / "out", "--tasks", 1, "--public-seed", "--submit")
        assert code == 2 and f"--out {readonly / 'out'}: cannot write there" in err and len(err.strip().splitlines()) == 1, err
        ok, line = module.preflight(0, out=readonly / "out")  # the same check on each task's node
        assert not ok and "cannot write there" in line
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(readonly)])

    def no_locks(fd: int, how: int) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)  # as on Lustre mounted without -o flock
    code, _, err = run_cli("slurm", folder, "-e", "lab-01", "--out", tmp_path / "out", "--tasks", 1, "--public-seed", "--submit")
    assert code == 2 and "file locks do not work there (No locks available)" in err and "-o flock" in err


def test_preflight_stops_a_node_that_cannot_grade(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from grader.batch import slurm as module
    from grader.sandbox import tiers
    from grader.sandbox.launchers import Launcher

    why = "bwrap 0.8.0 cannot start a sandbox here (bwrap: setting up uid map: Permission denied)"
    degraded = Launcher("process", notes={"bubblewrap": why})  # no Landlock, no uid: nothing kept out of reach
    monkeypatch.setattr(tiers, "probe", lambda *a, **k: degraded)
    ok, line = module.preflight(0)
    assert not ok and "official grading cannot run here" in line
    assert "setting up uid map: Permission denied" in line and "--allow-unsandboxed" in line
    assert module.preflight(0, allow_unsandboxed=True) == (True, f"node {socket.gethostname()}: sandbox process (DEGRADED), no GPU asked for")

    from grader.sandbox import launchers

    strong = Launcher("process", official_ok=True, notes={"bubblewrap": why})
    monkeypatch.setattr(tiers, "probe", lambda *a, **k: strong)
    monkeypatch.setattr(launchers, "assess", lambda launcher, *a, **k: launcher)  # its guarantees, as given
    ok, line = module.preflight(0, tier="bubblewrap")
    assert not ok and "the sandbox here is process, not the bubblewrap required (--require-tier): bwrap 0.8.0" in line
    assert module.preflight(0, tier="process")[0]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ok, line = module.preflight(1)
    assert not ok and "1 GPU(s) asked for but CUDA_VISIBLE_DEVICES is not set" in line
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia0").write_text("")
    monkeypatch.setattr(launchers, "DEV", str(tmp_path / "dev"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    ok, line = module.preflight(2)
    assert not ok and "CUDA_VISIBLE_DEVICES=0,1 for 2 GPU(s), but the sandbox would get" in line and "nvidia0" in line
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert module.preflight(1)[0]
    (tmp_path / "dev" / "nvidia0").chmod(0o000)  # a device this task may not open (as a cgroup denies it)
    if os.geteuid() != 0:
        ok, line = module.preflight(1)
        assert not ok and "which does not open (Permission denied)" in line
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0f3c2a")  # a MIG slice: its GPU's device file is shared
    ok, line = module.preflight(1)
    assert ok and "(MIG): every GPU device file is bound" in line


# --- the tests -----------------------------------------------------------------------------------


def test_array_cancel_resubmit_and_merge_equal_a_single_batch(slurm: Cluster, cancel_leftovers, tmp_path: Path) -> None:
    work = slurm.folder()
    folder, out, reference = work / "class", work / "out", tmp_path / "reference"
    students = _class(folder)
    secret = _secret_file(slurm, work)
    slurm.own(work)
    manifest = load_manifest(LAB01, default_plugins().checkers())
    timed = [cid for cid, c in manifest.checks.items() if c.kind in TIMED_KINDS]
    # The TA's shell holds the secret, and the site exports every variable to jobs: neither may
    # put the secret into Slurm's state, on the submit path or the resubmit path.
    leaky = {"GRADER_SECRET_SEED": SECRET, "SBATCH_EXPORT": "ALL"}

    # A TA's gradings on one node share one RLIMIT_NPROC count, which a sandbox's process limit is
    # computed from when it starts; two at once can then fail to fork ("not gradable", retried).
    # Not this test's subject: as the TA, one task at a time (a task then holds the node, its GPUs
    # included, so these tasks ask for none: the GPU test below has them).
    one_at_a_time = ["--sbatch=--exclusive"] if slurm.user else []
    gpus = "0" if slurm.user else "1"

    # 1. The array.
    array, merge = _submitted(
        slurm.grader("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", TASKS, "--gpus-per-task", gpus, "--secret-file",
                     secret, "--mem", "100M", "--sbatch=--comment=graded-by-grader", *one_at_a_time, "--submit", env=leaky)
    )  # fmt: skip
    cancel_leftovers += [array, merge]
    assert "# lab-01-moe-routing: grading in progress" in (out / "summary.md").read_text()
    secret_file = out / ".slurm" / "secret-seed"
    assert secret_file.stat().st_mode & 0o777 == 0o600 and secret_file.read_text().strip() == SECRET
    for script in ("grade.sbatch", "merge.sbatch"):
        assert SECRET not in (out / ".slurm" / script).read_text()
    assert _leaks(slurm) == []
    shown = _run("scontrol", "-o", "show", "job", array).stdout
    assert "Comment=graded-by-grader" in shown and "MinMemoryNode=100M" in shown  # passed through to Slurm
    plan = read_plan(out / ".state", TASKS)
    shards = {s: plan[s] for s in students}
    assert sorted(Counter(shards.values()).values()) == [5, 5, 5, 5]

    # 2. Cancel a task once it has graded one of its students, before it has graded them all.
    victim_shard = 1
    victim = f"{array}_{victim_shard - 1}"
    mine = [s for s, k in shards.items() if k == victim_shard]
    deadline = time.monotonic() + WAIT_S
    while True:
        done = [s for s in mine if (out / ".state" / f"{s}.json").exists()]
        if done:
            break
        assert time.monotonic() < deadline, f"task {victim} graded nothing in {WAIT_S:g} s: {_queued({array})}"
        time.sleep(0.05)
    _run("scancel", victim)
    assert len(done) < len(mine), f"task {victim} finished all {len(mine)} students before it could be cancelled"
    states = _wait([array, merge], out)
    assert states[victim] == "CANCELLED", states
    others = {k: s for k, s in states.items() if k.startswith(f"{array}_") and k != victim}
    assert len(others) == TASKS - 1 and set(others.values()) == {"COMPLETED"}, (states, _failed_logs(out, others))
    assert states[merge] == "FAILED", states  # afterany: it ran, and said that students are missing
    summary = (out / "summary.md").read_text()
    left = [s for s in mine if not (out / ".state" / f"{s}.json").exists()]
    assert left and f"**{len(left)} not graded yet**" in summary and "## Not graded yet" in summary
    assert f"{len(students)} submissions" in summary and "--resubmit K" in summary
    assert all(f"| {s} |" in summary for s in left)
    rows = _rows(out)  # a partial gradebook: everyone, those not graded yet with no score (not a 0)
    assert set(rows) == set(students)
    assert all(rows[s]["score"] == "" and rows[s]["gradable"] == "" for s in left)
    assert all(rows[s]["score"] != "" for s in set(students) - set(left))
    before = _records(out)

    # 3. The reference: one grader batch process over the same folder, with the same secret.
    proc = subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "-e", "lab-01", "--out", str(reference), "--jobs", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, GRADER_SECRET_SEED=SECRET))  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    # 4. Only the cancelled task, resubmitted: only what is missing is graded, and the secret stays out.
    array2, merge2 = _submitted(slurm.grader("slurm", folder, "-e", "lab-01", "--out", out, "--time", "00:20:00",
                                             "--resubmit", str(victim_shard - 1), env=leaky))  # fmt: skip
    cancel_leftovers += [array2, merge2]
    assert _leaks(slurm) == []
    shown = _run("scontrol", "-o", "show", "job", array2).stdout
    assert "TimeLimit=00:20:00" in shown and "MinMemoryNode=100M" in shown  # the script as submitted, --time given now
    states = _wait([array2, merge2], out)
    assert states == {f"{array2}_{victim_shard - 1}": "COMPLETED", merge2: "COMPLETED"}, states
    after = _records(out)
    assert set(after) == set(students)
    assert {s: after[s] for s in before} == before, "a student graded before the cancel was graded again"
    log = _log(out, f"{array2}_{victim_shard - 1}")
    assert f"{len(mine) - len(left)} already graded" in log and f"grading {len(left)} with" in log

    # 5. The merged gradebook is the single process's, timed checks aside.
    merged, single = _rows(out), _rows(reference)
    assert set(merged) == set(single) == set(students)
    for student in students:
        assert _untimed(merged[student], timed) == _untimed(single[student], timed), student
        assert _checks(out, student, timed) == _checks(reference, student, timed), student
        env_json = json.loads((out / student / "result.json").read_text())["environment"]
        assert env_json["node"] and env_json["job"] in {
            f"slurm {a}_{shards[student] - 1}" for a in (array, array2)
        }, (student, env_json["job"])  # graded by the task of its own shard
    assert (out / "summary.md").read_text().count("not graded yet") == 0

    # The grep above can find the secret: a plain sbatch from that shell stores it.
    control = slurm.sbatch("--hold", "--output=/dev/null", "--wrap=true", env=leaky)
    cancel_leftovers.append(control)
    assert _leaks(slurm), "the secret exported to a plain sbatch should be in slurmctld's state"
    _run("scancel", control)


def _gres_files(cluster: Cluster) -> list[str]:
    """The node's GPU device files in gres.conf order (GPU index 0, 1, ...)."""
    gres = Path(cluster.config["SLURM_CONF"]).parent / "gres.conf"
    files = []
    for line in gres.read_text().splitlines():
        match = re.search(r"File=(\S+)", line.split("#")[0])
        if match and "Name=gpu" in line:
            files += expand(match[1])
    return files


def test_each_task_s_sandbox_sees_only_its_gpu_and_a_bad_node_stops_early(slurm: Cluster, cancel_leftovers) -> None:
    work = slurm.folder()
    folder, out = work / "class", work / "out"
    folder.mkdir()
    (folder / "ada.py").write_text((LAB01 / "solution.py").read_text())
    slurm.own(work)
    typed = ["--gpu-type", slurm.gpu_type] if slurm.gpu_type else []
    proc = slurm.grader("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 2, "--gpus-per-task", 1, *typed,
                        "--public-seed", "--submit")  # fmt: skip
    job, merge = _submitted(proc)
    cancel_leftovers += [job, merge]
    states = _wait([job, merge], out)
    assert states == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED", merge: "COMPLETED"}, states
    # Each task's sandbox holds the device file of its own GPU (gres.conf order, whatever Slurm's
    # numbering in CUDA_VISIBLE_DEVICES), sees it as GPU 0, and can open it.
    files, seen = _gres_files(slurm), []
    for task in (0, 1):
        log = _log(out, f"{job}_{task}")
        match = re.search(r"CUDA_VISIBLE_DEVICES=(\d+), SLURM_JOB_GPUS=(\d+)\n", log)
        assert match, log
        visible, index = match[1], int(match[2])
        if slurm.constrained:
            assert visible == "0", log  # Slurm renumbers: an index taken as the minor number is wrong for one task
        expected = files[index]
        assert f"CUDA_VISIBLE_DEVICES={visible}: the sandbox sees and opens {expected} (as 0)" in log, log
        seen.append(expected)
    assert len(set(seen)) == 2, seen
    if slurm.constrained:
        assert files != sorted(files), "slurm-up's cgroup configuration lists the GPUs against the order of their numbers"

    # The same script without a GPU: the preamble must stop the task before any grading.
    bad = slurm.sbatch("--gres=none", "--array=0", str(out / ".slurm" / "grade.sbatch"))
    cancel_leftovers.append(bad)
    assert _wait([bad], out) == {f"{bad}_0": "FAILED"}
    log = _log(out, f"{bad}_0")
    assert "1 GPU(s) asked for but CUDA_VISIBLE_DEVICES is not set: did the job get --gres=gpu:1?" in log
    assert "grader batch:" not in log  # stopped before grading anything


def _without_bubblewrap(cluster: Cluster, where: Path) -> dict[str, str]:
    """A PATH with what the grader and Slurm's commands need, but no bwrap: a node without bubblewrap."""
    bin_dir = where / "bin-without-bwrap"
    bin_dir.mkdir()
    for tool in ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "prlimit", "setpriv", "hostname", "env", "runuser"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    cluster.own(bin_dir)
    return {"PATH": str(bin_dir)}


def test_tiers_are_counted_and_a_node_without_the_required_one_is_excluded(slurm: Cluster, cancel_leftovers) -> None:
    work = slurm.folder()
    folder, out = work / "class", work / "out"
    students = _class(folder, 4)
    slurm.own(work)
    no_bwrap = _without_bubblewrap(slurm, work)
    # One task at a time (a task takes the node), each grading one student at a time.
    base = ["slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 2, "--sbatch=--exclusive", "--public-seed", "--allow-unsandboxed"]

    # A class graded partly on a node without bubblewrap: the summary says so, with counts.
    assert slurm.grader(*base, "--print").returncode == 0
    again = ["slurm", folder, "-e", "lab-01", "--out", out, "--resubmit"]
    jobs = list(_submitted(slurm.grader(*again, "0")))
    jobs += _submitted(slurm.grader(*again, "1", env=no_bwrap))
    cancel_leftovers += jobs
    _wait(jobs, out)
    plan = read_plan(out / ".state", 2)
    weak = [s for s in students if plan[s] == 2]
    modes = {s: json.loads((out / s / "result.json").read_text())["sandbox"]["mode"] for s in students}
    assert {s for s, m in modes.items() if m != "bubblewrap"} == set(weak), modes
    summary = (out / "summary.md").read_text()
    process = "process" + (" (DEGRADED)" if json.loads((out / weak[0] / "result.json").read_text())["sandbox"]["degraded"] else "")
    line = next(line for line in summary.splitlines() if " · sandbox " in line)
    assert f"**bubblewrap**: {len(students) - len(weak)}" in line and f"**{process}**: {len(weak)}" in line, line
    assert "**Warning: students were graded in 2 sandbox tiers**" in summary and "--require-tier" in summary

    # Requiring bubblewrap, on a node without it: the first task's preflight fails, and instead of
    # handing that node every pending task in turn, Slurm is told to keep them off it. With
    # another node left (the cgroup configuration has one, down), they wait for it; with none,
    # they are cancelled. Either way the merge says who is not graded.
    fresh = work / "out2"
    array, merge = _submitted(slurm.grader(*[fresh if a == out else a for a in base], "--require-tier", "bubblewrap",
                                           "--submit", env=no_bwrap))  # fmt: skip
    cancel_leftovers += [array, merge]
    node = _run("sinfo", "-h", "-N", "-t", "idle,alloc,mix", "-o", "%N").stdout.split()[0]
    others = set(expand(",".join(_run("sinfo", "-h", "-o", "%N").stdout.split()))) - {node}
    first = f"{array}_0"
    deadline = time.monotonic() + WAIT_S
    while first in _queued({array}) or not (fresh / ".slurm" / "logs" / f"grade-{first}.out").exists():
        assert time.monotonic() < deadline, f"task {first} did not end: {_queued({array})}"
        time.sleep(0.2)
    log = _log(fresh, first)
    assert "the sandbox here is process, not the bubblewrap required (--require-tier)" in log, log
    assert "grader batch:" not in log
    if others:
        assert f"node {node} is excluded from the array's pending tasks (ExcNodeList=" in log, log
        time.sleep(3)  # the node is idle again, and nothing of the array goes to it
        pending = [dict(f.split("=", 1) for f in line.split() if "=" in f)
                   for line in _run("scontrol", "-o", "show", "job", array).stdout.splitlines() if "JobState=PENDING" in line]  # fmt: skip
        assert pending and all(node in expand(p["ExcNodeList"]) for p in pending), pending
        assert set(_queued({array}).values()) == {"PENDING"}, _queued({array})
        _run("scancel", array)
    else:
        assert "no other node of partition" in log and "pending tasks were cancelled" in log, log
    states = _wait([array, merge], fresh)
    tasks = {k: s for k, s in states.items() if k.startswith(f"{array}_")}
    assert tasks[first] == "FAILED" and set(tasks.values()) == {"FAILED", "CANCELLED"}, states  # one ran; none after it
    assert states[merge] == "FAILED", states  # it ran: afterany
    assert f"**{len(students)} not graded yet**" in (fresh / "summary.md").read_text()


def test_exclude_reaches_slurm_and_the_merge_waits_for_the_shards(slurm: Cluster, cancel_leftovers) -> None:
    work = slurm.folder()
    folder, out = work / "class", work / "out"
    _class(folder, 2)
    slurm.own(work)
    nodes = ",".join(_run("sinfo", "-h", "-o", "%N").stdout.split())
    # --exclude is sbatch's: every node excluded, Slurm itself refuses the job.
    proc = slurm.grader("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 1, "--exclude", nodes, "--public-seed", "--submit")
    assert proc.returncode == 3 and "sbatch" in proc.stderr and "failed" in proc.stderr, proc.stderr

    # A merge that starts while a shard still writes waits for it, then merges.
    array, merge = _submitted(slurm.grader("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 1, "--public-seed", "--submit"))
    cancel_leftovers += [array, merge]
    _wait([array, merge], out)
    lock = os.open(out / ".state" / "batch.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)  # as a shard does while it grades
        late = slurm.sbatch(str(out / ".slurm" / "merge.sbatch"))
        cancel_leftovers.append(late)
        log = out / ".slurm" / "logs" / f"merge-{late}.out"
        deadline = time.monotonic() + 60
        while not (log.exists() and "waiting for the gradings still writing there to end" in log.read_text()):
            assert time.monotonic() < deadline, f"the merge did not wait: {_queued({late})} {log.read_text() if log.exists() else ''}"
            time.sleep(0.2)
        assert _queued({late}) == {late: "RUNNING"}
    finally:
        os.close(lock)
    assert _wait([late], out) == {late: "COMPLETED"}
    assert "2 students, merged 2 stored results" in log.read_text()
