"""One submission's process tree as one thing: the keeper holds it, a cgroup (or SIGSTOP) freezes
it between calls, so the baseline the grader times cannot be starved, and what a call started
does not outlive it."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox.corpus_checks import CORPUS
from support import LAB01

from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import GradeResult
from grader.sandbox import cgroups, keeper
from grader.sandbox.client import launch
from grader.sandbox.launchers import Launcher, worker_env
from grader.sandbox.tiers import probe
from grader.session import Grader

STARVES = CORPUS / "starves_the_baseline.py"


def _lab(tmp_path: Path, extra: str = "") -> Path:
    lab = tmp_path / LAB01.name
    shutil.copytree(LAB01, lab, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = lab / "manifest.toml"
    manifest.write_text(manifest.read_text() + extra)
    return lab


def _speed(result: GradeResult) -> tuple[str, float]:
    check = next(c for c in result.checks if c.id == "grouped-is-faster")
    return check.status.value, float(check.details.get("speedup") or 0)


def _grade(lab: Path, launcher: Launcher, path: Path) -> GradeResult:
    return Grader(load_manifest(lab, default_plugins().checkers()), launcher=launcher).grade(path)


def test_keeper_kills_what_outlives_the_worker(tmp_path: Path) -> None:
    """A daemon that double-forks away from its parent still dies with the worker."""
    pidfile = tmp_path / "daemon.pid"
    script = f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n        time.sleep(120)\n    os._exit(0)\ntime.sleep(0.5)\n"
    proc = subprocess.run([sys.executable, "-I", "-S", keeper.__file__, "--", sys.executable, "-c", script], timeout=30)
    assert proc.returncode == 0
    daemon = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{daemon}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{daemon}").exists() or " Z " in Path(f"/proc/{daemon}/stat").read_text(), "the daemon outlived the keeper"


def test_keeper_reports_a_signal_as_bwrap_does() -> None:
    proc = subprocess.run([sys.executable, "-I", "-S", keeper.__file__, "--", "sh", "-c", "kill -9 $$"], timeout=30)
    assert proc.returncode == 128 + 9


@pytest.fixture(scope="module")
def full() -> Launcher:
    launcher = probe()
    if launcher.mode != "bubblewrap":
        pytest.skip("needs bubblewrap")
    return launcher


def test_the_baseline_is_timed_while_the_submission_is_frozen(full: Launcher, tmp_path: Path) -> None:
    """The lab lets processes outlive calls here, so only freezing stands between the burners and
    the baseline: with a cgroup freezer, and with SIGSTOP where there is no cgroup. (Where the
    kernel groups tasks by session for the scheduler, sched_autogroup, as here, the burners win
    the baseline less CPU than elsewhere; test_between_calls_the_whole_tree_is_frozen checks the
    freezing itself.)"""
    lab = _lab(tmp_path, "\n[lab.worker]\nchildren_outlive_calls = true\n")
    no_cgroup = dataclasses.replace(full, cgroups=cgroups.Support())
    for launcher in (full, no_cgroup):
        status, speedup = _speed(_grade(lab, launcher, STARVES))
        assert status == "failed" and speedup < 2, (launcher.cgroups.places, speedup)


def _cpu_ticks(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


@pytest.mark.parametrize("freezer", ["cgroup", "sigstop"])
def test_between_calls_the_whole_tree_is_frozen(full: Launcher, tmp_path: Path, freezer: str) -> None:
    """A child the submission started (and may keep) burns CPU only while a call runs."""
    launcher = full if freezer == "cgroup" else dataclasses.replace(full, cgroups=cgroups.Support())
    if freezer == "cgroup" and not launcher.cgroups.has("freeze"):
        pytest.skip("no writable cgroup freezer here")
    folder = tmp_path / "sub"
    folder.mkdir(mode=0o755)
    path = folder / "burn.py"
    path.write_text("import os\nif os.fork() == 0:\n    while True:\n        pass\n")
    path.chmod(0o644)
    init = {"op": "init", "module": "burn", "functions": [], "imports": ["numpy"], "threads": 1}
    deadline = time.monotonic() + 30
    worker = launch(launcher, sys.executable, path, worker_env({}, 1), launcher.limits(1024), init, deadline, keep_children=True)
    try:
        assert worker.receive(deadline).header["op"] == "ready"
        assert worker.settle()
        burner = worker.tree.children()
        assert len(burner) == 1
        before = _cpu_ticks(burner)
        time.sleep(0.5)
        assert _cpu_ticks(burner) == before, "a frozen child ran"
        assert worker.thaw() is None  # it stayed still: nothing to report
        time.sleep(0.5)
        assert _cpu_ticks(burner) > before + 10
    finally:
        worker.close()
    assert not any(Path(f"/proc/{pid}").exists() for pid in burner)


RESUMES_ITSELF = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)

class SigEvent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int), ("pad", ctypes.c_int * 12)]

class ITimerSpec(ctypes.Structure):
    _fields_ = [("interval_s", ctypes.c_long), ("interval_ns", ctypes.c_long), ("value_s", ctypes.c_long), ("value_ns", ctypes.c_long)]

if os.fork() == 0:
    timer = ctypes.c_void_p()
    assert libc.timer_create(1, ctypes.byref(SigEvent(None, signal.SIGCONT, 0)), ctypes.byref(timer)) == 0
    assert libc.timer_settime(timer, 0, ctypes.byref(ITimerSpec(0, 20_000_000, 0, 300_000_000)), None) == 0
    while True:
        pass
"""


def test_a_tree_frozen_by_sigstop_that_resumes_itself_is_caught(full: Launcher, tmp_path: Path) -> None:
    """SIGSTOP can be undone by the kernel on the submission's behalf: a POSIX timer armed to
    send SIGCONT resumes a stopped process. Its CPU time, read at the freeze and before the thaw,
    shows it ran, and the thaw says so (the client then discards the worker)."""
    launcher = dataclasses.replace(full, cgroups=cgroups.Support())
    folder = tmp_path / "sub"
    folder.mkdir(mode=0o755)
    path = folder / "resume.py"
    path.write_text(RESUMES_ITSELF)
    path.chmod(0o644)
    init = {"op": "init", "module": "resume", "functions": [], "imports": ["numpy"], "threads": 1}
    deadline = time.monotonic() + 30
    worker = launch(launcher, sys.executable, path, worker_env({}, 1), launcher.limits(1024), init, deadline, keep_children=True)
    try:
        assert worker.receive(deadline).header["op"] == "ready"
        assert worker.settle()
        assert worker.tree.ran_while_frozen() is None  # the timer has not fired yet (300 ms)
        time.sleep(0.8)
        broken = worker.thaw()
        assert broken is not None and "ms of CPU time" in broken, broken
    finally:
        worker.close()


GRADER_DIES = """
import json, os, signal, sys, time
from pathlib import Path
from grader.sandbox import cgroups
from grader.sandbox.client import launch
from grader.sandbox.launchers import worker_env
from grader.sandbox.tiers import probe
import dataclasses
launcher = probe()
if sys.argv[2] == "sigstop":
    launcher = dataclasses.replace(launcher, cgroups=cgroups.Support())
init = {"op": "init", "module": "burn", "functions": [], "imports": ["numpy"], "threads": 1}
deadline = time.monotonic() + 30
worker = launch(launcher, sys.executable, Path(sys.argv[1]), worker_env({}, 1), launcher.limits(1024), init, deadline, True)
assert worker.receive(deadline).header["op"] == "ready" and worker.settle()
print(json.dumps(sorted(worker.tree.members())), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("freezer", ["cgroup", "sigstop"])
def test_a_grader_that_dies_between_calls_leaves_nothing(full: Launcher, tmp_path: Path, freezer: str) -> None:
    """The grader is killed while the worker's tree is frozen: the keeper (never frozen) thaws
    and kills the tree, and nothing of it is left, frozen or not."""
    import json

    folder = tmp_path / "sub"
    folder.mkdir(mode=0o755)
    path = folder / "burn.py"
    path.write_text("import os\nif os.fork() == 0:\n    while True:\n        pass\n")
    path.chmod(0o644)
    proc = subprocess.run([sys.executable, "-c", GRADER_DIES, str(path), freezer], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr[-2000:]
    tree = json.loads(proc.stdout.splitlines()[-1])
    assert len(tree) >= 3  # the keeper, the worker, its child (and bwrap's two)
    deadline = time.monotonic() + 10
    alive = tree
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in tree if Path(f"/proc/{pid}").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()]
    assert not alive, f"left behind after the grader died: {alive}"


@pytest.mark.skipif(not cgroups.support().has("freeze"), reason="no writable cgroup freezer here")
def test_a_frozen_cgroup_gets_no_cpu() -> None:
    group = cgroups.WorkerCgroup(256 << 20, 16)
    burner = subprocess.Popen([sys.executable, "-I", "-S", keeper.__file__, *group.keeper_args(), "--", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        pids = group.members() - {burner.pid}  # the burner; its keeper is never frozen
        assert len(pids) == 1

        assert group.freeze(True)
        before = _cpu_ticks(pids)
        time.sleep(0.5)
        assert _cpu_ticks(pids) == before, "a frozen process ran"
        assert group.freeze(False)
        time.sleep(0.3)
        assert _cpu_ticks(pids) > before
    finally:
        assert not group.kill()
        burner.wait(timeout=10)
        group.remove()
    assert burner.returncode in (-9, 128 + 9)  # the keeper is in the cgroup too
