"""The grader on a student's or TA's own machine: an ordinary user made with ``useradd``, no
cgroup of its own, other work running under the same uid, libraries that map far more address
space than they use (a CUDA build of torch maps 3 GiB at import, 0.7 GiB of it private).

Each test runs its driver as that user (``emulate/environment.py nonroot --user``), with the
interpreter and the repository made reachable as they are on a machine where Python lives in
/usr. What must hold there:

* the per-sandbox process limit counts only the sandbox's own tasks, however many the user
  runs and starts meanwhile (``bwrap: Can't fork for pid 1`` with ``--jobs 2`` before), and a
  fork bomb is still stopped;
* a worker whose lab imports map gigabytes of libraries starts under the memory budget, while
  an allocation over the budget, private or shared, is still stopped.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from support import LAB01, ROOT

EMULATE = Path(__file__).resolve().parent / "emulate"
USER = "grader-ci"
USERADD = shutil.which("useradd") or next((p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def user() -> str:
    """An ordinary account, made with useradd once (CI runs as root and has none)."""
    why = None
    if os.geteuid() != 0:
        why = "emulating a user's own machine needs root (to make the user and drop to it)"
    elif not all(shutil.which(tool) for tool in ("bwrap", "setpriv", "prlimit")) or not USERADD:
        why = "needs bwrap, setpriv, prlimit and useradd"
    if why and os.environ.get("GRADER_REQUIRE_BWRAP"):
        pytest.fail(why + " (CI must provide it)")
    if why:
        pytest.skip(why)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run([USERADD, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    return USER


def _as_user(user: str, command: list[str], tmp: Path, reachable: list[Path], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    os.chmod(tmp, 0o755)  # the folders above it are made reachable in the emulation's own mount namespace
    paths: list[str] = []
    for path in (sys.executable, sys.prefix, sys.base_prefix, ROOT, tmp, *reachable):
        paths += ["--reachable", str(path)]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "TMPDIR": "/tmp", "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT), "GRADER_SECRET_SEED": "own-machine", "GRADER_EXERCISES": str(tmp / "exercises"),
    }  # fmt: skip
    argv = [sys.executable, str(EMULATE / "environment.py"), "nonroot", "--user", user, *paths, "--", *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)


def _lab(tmp: Path, worker: str = "", memory_mb: int = 1024) -> Path:
    lab = tmp / "exercises" / LAB01.parent.name / LAB01.name
    shutil.copytree(LAB01, lab, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = lab / "manifest.toml"
    manifest.write_text(manifest.read_text() + f"\n[lab.worker]\nmemory_mb = {memory_mb}\n{worker}")
    for folder in (lab, *lab.parents):
        if folder == tmp:
            break
        os.chmod(folder, 0o755)
    return lab


def _json_lines(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return lines


# -- processes: a limit per sandbox, whatever else the user runs ------------------------------------

# Computes a worker's limits, then the user's other work grows by 300 threads (a browser, the
# thread pools of CUDA torch in the batch workers), then the worker starts: the submission forks
# as often as it can at import.
GROWTH_DRIVER = """
import json, sys, threading
from pathlib import Path
from grader.manifest import load_manifest
from grader.plugins import default
from grader.sandbox import tiers
from grader.sandbox.client import Submission
lab = Path(sys.argv[1])
manifest = load_manifest(lab, default().checkers())
launcher = tiers.choose("auto", official=True, lab_dir=lab, memory_mb=1024)
source = (lab / "solution.py").read_bytes() + b'''
import os, time
_n = 0
for _ in range(64):
    try:
        _pid = os.fork()
    except OSError:
        break
    if _pid == 0:
        time.sleep(3)
        os._exit(0)
    _n += 1
print("forked", _n)
'''
sub = Submission(source, "solution.py", manifest, launcher)
hold = threading.Event()
for _ in range(300):
    threading.Thread(target=hold.wait, daemon=True).start()
try:
    sub.start()
    failure = sub.import_failure
except Exception as exc:
    failure = f"{type(exc).__name__}: {exc}"
sub.close()
pids = {g.name: g.held for g in launcher.guarantees}["pids"]
print(json.dumps({"mode": launcher.mode, "failure": failure, "output": sub.output, "pids": pids,
                  "nproc": sub._limits.nproc}))
"""


def test_the_process_limit_counts_only_the_sandbox_while_the_user_starts_300_threads(user: str, tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    proc = _as_user(user, [sys.executable, "-c", GROWTH_DRIVER, str(lab)], tmp_path, [])
    (info,) = _json_lines(proc)
    assert info["mode"] == "bubblewrap" and info["failure"] is None, info
    assert info["pids"] is True, info  # a user namespace of its own: the limit holds per sandbox
    forked = int(info["output"].split("forked")[-1].split()[0])
    # 4 processes at most without a memory cgroup: the worker and 3 children (bwrap's init is the 5th)
    assert forked == info["nproc"] - 2 == 3, info


BATCH_DRIVER = """
import subprocess, sys, threading, time
stop = threading.Event()
def churn():  # other work of the same user, its thread count going up and down
    while not stop.is_set():
        threads = [threading.Thread(target=time.sleep, args=(0.05,)) for _ in range(150)]
        for t in threads: t.start()
        for t in threads: t.join()
threading.Thread(target=churn, daemon=True).start()
proc = subprocess.run([sys.executable, "-m", "grader", *sys.argv[1:]], capture_output=True, text=True)
stop.set()
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
sys.exit(proc.returncode)
"""


def test_batch_with_two_jobs_grades_as_a_user_whose_other_work_keeps_starting_threads(user: str, tmp_path: Path) -> None:
    _lab(tmp_path)
    folder = tmp_path / "class"
    folder.mkdir()
    for student in ("ada", "bob", "cyd", "dee"):
        shutil.copy(LAB01 / "solution.py", folder / f"{student}.py")
    shutil.copy(Path(__file__).parent / "corpus" / "fork_bomb.py", folder / "eve.py")
    out = tmp_path / "out"
    out.mkdir()
    entry = pwd.getpwnam(user)
    os.chown(out, entry.pw_uid, entry.pw_gid)
    proc = _as_user(user, [sys.executable, "-c", BATCH_DRIVER, "batch", str(folder), "-e", "lab-01", "--jobs", "2", "--out", str(out)], tmp_path, [])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = {s: json.loads((out / s / "result.json").read_text()) for s in ("ada", "bob", "cyd", "dee", "eve")}
    for student in ("ada", "bob", "cyd", "dee"):
        assert results[student]["gradable"] and results[student]["score"] == 10, results[student]["error"]
    bomb = {c["id"]: c for c in results["eve"]["checks"]}
    assert results["eve"]["gradable"] and bomb["permute-bookkeeping"]["status"] == "error"


# -- memory: libraries mapped whole, allocations still bounded --------------------------------------

# What a CUDA build of torch does at import, on a machine without a GPU: it maps its libraries
# (3 GiB of file-backed code, never read whole) and their writable data (0.7 GiB, private).
BIG_LIBRARIES = """
import mmap, os
_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, "big_libraries.bin"), "rb") as _fh:
    CODE = mmap.mmap(_fh.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC)
DATA = mmap.mmap(-1, 700 << 20, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
"""

OVER_BUDGET = '''
import mmap
import numpy as np

def expert_mlp(x, w1, w2):  # 1.5 GiB of private memory in one process, over its 1 GiB share
    block = np.ones(3 << 27, dtype=np.float32)
    return np.maximum(x @ w1, 0.0) @ w2 + block[:1] * 0

def route(x, w_gate, k):  # 1.5 GiB of shared anonymous memory, which RLIMIT_DATA does not count
    held = mmap.mmap(-1, 3 << 29)
    held[:: 1 << 20] = b"\\x01" * (3 << 9)
    raise AssertionError("held 1.5 GiB of shared memory")
'''


def test_a_worker_whose_libraries_map_gigabytes_starts_and_allocations_stay_bounded(user: str, tmp_path: Path) -> None:
    # A virtual environment of its own whose site-packages also sees this one's (numpy, grader's deps).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (site / "big_libraries.py").write_text(BIG_LIBRARIES)
    with open(site / "big_libraries.bin", "wb") as fh:
        fh.truncate(3 << 30)  # sparse: no disk used
    lab = _lab(tmp_path, 'imports = ["big_libraries"]\n', memory_mb=4096)
    hog = tmp_path / "over_budget.py"
    hog.write_text((LAB01 / "solution.py").read_text() + OVER_BUDGET)
    python = str(venv / "bin" / "python")
    proc = _as_user(user, [python, str(EMULATE / "grade.py"), str(lab), str(LAB01 / "solution.py"), str(hog)], tmp_path, [venv])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {entry["file"]: entry["result"] for entry in _json_lines(proc)}
    solution = results["solution.py"]
    assert solution["sandbox"]["mode"] == "bubblewrap" and not any(g["held"] for g in solution["sandbox"]["guarantees"] if g["name"] == "memory")
    assert solution["gradable"] and solution["score"] == 10, [c["message"] for c in solution["checks"] if c["status"] != "passed"]
    checks = {c["id"]: c for c in results["over_budget.py"]["checks"]}
    assert checks["expert-mlp-matches-reference"]["status"] == "error"
    assert "MemoryError" in checks["expert-mlp-matches-reference"]["message"], checks["expert-mlp-matches-reference"]
    assert checks["route-matches-reference"]["status"] == "error"
    assert "held 1.5 GiB" not in checks["route-matches-reference"]["message"], checks["route-matches-reference"]
    assert "Cannot allocate memory" in checks["route-matches-reference"]["message"] or "OSError" in checks["route-matches-reference"]["message"]
