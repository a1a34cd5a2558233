"""``grader slurm`` on a real Slurm: a job array and its merge, a task cancelled and resubmitted.

These tests need a running Slurm with two GPUs in gres: ``.ci/slurm-up`` starts a private
single-node one (fake GPUs as device files) and prints the ``export SLURM_CONF=...`` to use;
``.ci/slurm-down`` stops it. Without one they are skipped, saying why, unless
``GRADER_REQUIRE_SLURM=1`` (CI sets it), which makes a missing Slurm a failure.

Job states are read with squeue while jobs are queued or running and with scontrol (sacct
where accounting exists) once they end; ``sbatch --wait`` is never trusted, since it can
return 0 for a job that was cancelled.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import LAB01, ROOT, wrong_file

from grader.batch.shard import shard_of
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins

pytestmark = pytest.mark.slurm

REQUIRE_ENV = "GRADER_REQUIRE_SLURM"
SECRET = "slurm-test-secret-7f3a9c"
TASKS = 4
WAIT_S = 240.0
TIMED_KINDS = ("cpu-speedup", "gpu-speed")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


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
    if not re.search(r"gpu:(\d+)", proc.stdout) or int(re.search(r"gpu:(\d+)", proc.stdout)[1]) < 2:
        return f"the Slurm here has no node with 2 GPUs in gres (sinfo: {proc.stdout.strip()!r}); .ci/slurm-up makes one"
    return None


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The running Slurm's configuration; skips (or fails, when required) without one."""
    why = _why_no_slurm()
    if why is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(why)
    config = {}
    for line in _run("scontrol", "show", "config").stdout.splitlines():
        key, _, value = line.partition("=")
        config[key.strip()] = value.strip()
    return config


# --- job states ----------------------------------------------------------------------------------


def _queued(jobs: set[str]) -> dict[str, str]:
    """Array tasks and jobs of ``jobs`` that squeue still lists, with their state."""
    out = _run("squeue", "-h", "-o", "%i %T").stdout
    return {i: s for i, s in (line.split() for line in out.splitlines() if line.strip()) if i.split("_")[0] in jobs}


def _final_states(job: str) -> dict[str, str]:
    """The end state of a job, or of each task of an array (``6_0``: ``COMPLETED``)."""
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


def _class(folder: Path) -> list[str]:
    """20 lab-01 submissions: solutions, accepted alternatives, starters and wrong files."""
    files = [LAB01 / "solution.py"] * 6 + sorted((LAB01 / "accepted").glob("*.py")) + [LAB01 / "starter.py"] * 3
    sources = [(path.stem, path.read_text()) for path in files]
    sources += [(p.stem, wrong_file(p.stem)) for p in sorted((LAB01 / "wrong").glob("*.patch"))][: 20 - len(sources)]
    assert len(sources) == 20
    folder.mkdir(parents=True)
    names = []
    for i, (stem, text) in enumerate(sources):
        name = f"s{i:02d}_{stem}"
        (folder / f"{name}.py").write_text(text)
        names.append(name)
    return names


def _grader(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grader", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env=env,
    )  # fmt: skip


def _submit(folder: Path, out: Path, env: dict[str, str]) -> tuple[str, str, str]:
    proc = _grader("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", TASKS, "--gpus-per-task", 1, "--submit", env=env)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"array job (\d+) .*; merge job (\d+) \(after the array, whatever its outcome\)", proc.stdout)
    assert match, proc.stdout
    return match[1], match[2], proc.stderr


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
    return {p.stem: p.stat().st_mtime_ns for p in (out / ".state").glob("*.json")}


# --- the scripts, without a Slurm ----------------------------------------------------------------


def _scripts(out: Path) -> tuple[str, str]:
    return (out / ".slurm" / "grade.sbatch").read_text(), (out / ".slurm" / "merge.sbatch").read_text()


def test_print_writes_scripts_that_keep_the_secret_in_a_0600_file(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    _class(folder)
    monkeypatch.setenv("GRADER_SECRET_SEED", SECRET)
    code, printed, err = run_cli(
        "slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 4, "--partition", "gpu", "--time", "00:30:00",
        "--account", "cs599", "--constraint", "h100", "--cpus-per-task", 2, "--print",
    )  # fmt: skip
    assert code == 0, err
    grade, merge = _scripts(out)
    secret = out / ".slurm" / "secret-seed"
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.read_text() == SECRET + "\n"
    assert (out / ".slurm").stat().st_mode & 0o777 == 0o700
    assert SECRET not in grade + merge + printed + err
    for line in ("#SBATCH --array=0-3", "#SBATCH --partition=gpu", "#SBATCH --time=00:30:00", "#SBATCH --account=cs599",
                 "#SBATCH --constraint=h100", "#SBATCH --cpus-per-task=2", "#SBATCH --export=ALL,GRADER_SECRET_SEED=",
                 f"export GRADER_SECRET_SEED_FILE={secret.resolve()}", f"PYTHON={sys.executable}",
                 'SHARD="$((SLURM_ARRAY_TASK_ID + 1))/4"', '-m grader.batch.slurm preflight --gpus 0 || exit 3',
                 f'--out {out.resolve()} --shard "$SHARD" --jobs "${{SLURM_CPUS_PER_TASK:-1}}"'):  # fmt: skip
        assert line in grade, line
    assert "--gres" not in grade  # lab-01 has no GPU check
    assert "#SBATCH --time=00:10:00" in merge and f"--out {out.resolve()} --merge-only" in merge
    assert "--dependency=afterany:" in printed and grade in printed and merge in printed
    # The scripts are valid bash.
    for script in (out / ".slurm" / "grade.sbatch", out / ".slurm" / "merge.sbatch"):
        assert _run("bash", "-n", str(script), check=False).returncode == 0

    # Later, without the variable: the file already there is used; a GPU lab asks for a GPU a task.
    monkeypatch.delenv("GRADER_SECRET_SEED")
    code, _, err = run_cli("slurm", folder, "-e", "lab-05", "--out", out, "--tasks", 2, "--print")
    assert code == 0 and "the jobs use the one already in" in err
    grade, _ = _scripts(out)
    assert "#SBATCH --gres=gpu:1" in grade and "preflight --gpus 1" in grade and "GRADER_SECRET_SEED_FILE" in grade


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "2"], "one of the arguments --print --submit is required"),
        (["--tasks", "2", "--print", "--submit"], "not allowed with argument"),
        (["--tasks", "0", "--print"], "must be at least 1"),
        (["--tasks", "2", "--gpus-per-task", "-1", "--print"], "must be 0 or more"),
        (["--tasks", "2", "--submit"], "sbatch is not on PATH: run this on a Slurm login node, or use --print"),
    ],
)
def test_slurm_bad_input_is_one_line_and_exit_2(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, message) -> None:
    (tmp_path / "class").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    code, _, err = run_cli("slurm", tmp_path / "class", "-e", "lab-01", "--out", tmp_path / "out", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


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

    strong = Launcher("process", official_ok=True)
    monkeypatch.setattr(tiers, "probe", lambda *a, **k: strong)
    monkeypatch.setattr(launchers, "assess", lambda launcher, *a, **k: launcher)  # its guarantees, as given
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
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0f3c2a")  # a MIG slice: its GPU's device file is shared
    ok, line = module.preflight(1)
    assert ok and "(MIG): every GPU device file is bound" in line


# --- the tests -----------------------------------------------------------------------------------


def test_array_cancel_resubmit_and_merge_equal_a_single_batch(slurm, cancel_leftovers, tmp_path: Path) -> None:
    folder, out, reference = tmp_path / "class", tmp_path / "out", tmp_path / "reference"
    students = _class(folder)
    env = dict(os.environ, GRADER_SECRET_SEED=SECRET)
    manifest = load_manifest(LAB01, default_plugins().checkers())
    timed = [cid for cid, c in manifest.checks.items() if c.kind in TIMED_KINDS]
    shards = {s: shard_of(s, TASKS) for s in students}
    assert set(shards.values()) == set(range(1, TASKS + 1)), "every shard should hold a student of these 20"

    # 1. The array, with the secret in the submitting shell: it must not reach Slurm's stores.
    array, merge, err = _submit(folder, out, env)
    cancel_leftovers += [array, merge]
    assert "mode 0600" in err
    secret_file = out / ".slurm" / "secret-seed"
    assert secret_file.stat().st_mode & 0o777 == 0o600 and secret_file.read_text().strip() == SECRET
    for script in ("grade.sbatch", "merge.sbatch"):
        assert SECRET not in (out / ".slurm" / script).read_text()
    for key in ("StateSaveLocation", "SlurmdSpoolDir"):
        stored = _run("grep", "-rl", SECRET, slurm[key], check=False)
        assert stored.returncode == 1, f"the secret is in Slurm's {key}: {stored.stdout}"

    # 2. Cancel a task once it has graded one of its students, before it has graded them all.
    victim_shard = max(range(1, TASKS + 1), key=lambda k: sum(1 for v in shards.values() if v == k))
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
    assert len(others) == TASKS - 1 and set(others.values()) == {"COMPLETED"}, states
    assert states[merge] == "FAILED", states  # afterany: it ran, and said that students are missing
    summary = (out / "summary.md").read_text()
    left = [s for s in mine if not (out / ".state" / f"{s}.json").exists()]
    assert left and f"**{len(left)} not graded yet**" in summary and "## Not graded yet" in summary
    assert all(f"| {s} |" in summary for s in left)
    assert set(_rows(out)) == set(students) - set(left)
    before = _records(out)

    # 3. The reference: one grader batch process over the same folder, with the same secret.
    proc = _grader("batch", folder, "-e", "lab-01", "--out", reference, "--jobs", "2", env=env)
    assert proc.returncode == 0, proc.stderr

    # 4. Resubmitted: only what is missing is graded; nothing graded before is graded again.
    array2, merge2, _ = _submit(folder, out, env)
    cancel_leftovers += [array2, merge2]
    states = _wait([array2, merge2], out)
    assert set(states.values()) == {"COMPLETED"} and len(states) == TASKS + 1, states
    after = _records(out)
    assert set(after) == set(students)
    assert {s: after[s] for s in before} == before, "a student graded before the cancel was graded again"
    log = (out / ".slurm" / "logs" / f"grade-{array2}_{victim_shard - 1}.out").read_text()
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


def test_each_task_s_sandbox_sees_only_its_gpu_and_a_bad_node_stops_early(slurm, cancel_leftovers, tmp_path: Path) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    (folder / "ada.py").write_text((LAB01 / "solution.py").read_text())
    proc = _grader("slurm", folder, "-e", "lab-01", "--out", out, "--tasks", 2, "--gpus-per-task", 1, "--print")
    assert proc.returncode == 0, proc.stderr
    grade = out / ".slurm" / "grade.sbatch"

    # Submitted by hand from a shell that holds the secret: the script's --export keeps it out.
    sbatch = subprocess.run(
        ["sbatch", "--parsable", str(grade)], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, GRADER_SECRET_SEED=SECRET),
    )  # fmt: skip
    assert sbatch.returncode == 0, sbatch.stderr
    ok = sbatch.stdout.strip().split(";")[0]
    cancel_leftovers.append(ok)
    for key in ("StateSaveLocation", "SlurmdSpoolDir"):
        stored = _run("grep", "-rl", SECRET, slurm[key], check=False)
        assert stored.returncode == 1, f"the secret is in Slurm's {key}: {stored.stdout}"
    # Each task's sandbox holds the device file of its own fake GPU, and sees it as GPU 0.
    states = _wait([ok], out)
    assert states == {f"{ok}_0": "COMPLETED", f"{ok}_1": "COMPLETED"}, states
    for task in (0, 1):
        log = (out / ".slurm" / "logs" / f"grade-{ok}_{task}.out").read_text()
        visible = re.search(r"CUDA_VISIBLE_DEVICES=(\d+)\n", log)
        assert visible, log
        assert f"CUDA_VISIBLE_DEVICES={visible[1]}: the sandbox sees /dev/nvidia{visible[1]} (as 0)" in log, log

    # The same script without a GPU: the preamble must stop the task before any grading.
    bad = _run("sbatch", "--parsable", "--gres=none", "--array=0", str(grade)).stdout.strip().split(";")[0]
    cancel_leftovers.append(bad)
    assert _wait([bad], out) == {f"{bad}_0": "FAILED"}
    log = (out / ".slurm" / "logs" / f"grade-{bad}_0.out").read_text()
    assert "1 GPU(s) asked for but CUDA_VISIBLE_DEVICES is not set: did the job get --gres=gpu:1?" in log
    assert "grader batch:" not in log  # stopped before grading anything
