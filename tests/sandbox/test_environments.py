"""Official grading where courses run the grader, each environment emulated on this machine:

* ``debian``: Debian's bubblewrap, as CI installs it (the full hostile corpus runs there too,
  in test_corpus.py);
* ``bwrap-0.6``: bubblewrap with 0.6.1's option set (Ubuntu 22.04, Gradescope's default base
  image): no ``--size``, emulated by ``emulate/bwrap-0.6.1`` in front of the real binary;
* ``docker``: Docker's defaults (its capability set, its seccomp rules against namespaces, the
  cgroup file system read-only), by ``emulate/environment.py docker``: bubblewrap cannot start;
* ``nonroot``: an ordinary user (``emulate/environment.py nonroot``).

In each, lab-01's solution and starter and the hostile files that probe each guarantee are
graded with ``official=True`` in a separate process, and must get their verdicts, and the
result must name the tier and its guarantees. The full corpus runs once (under ``debian``);
the other environments differ only in how the sandbox is built, so they run the files that
attack what differs between tiers: files, secret, network and the host's UNIX sockets, memory
across processes, shared memory, the baseline, processes, cleanup and escapes, and (in
``corpus/frozen_by_signals/``, graded only where no cgroup freezer is writable) a tree that
resumes itself from SIGSTOP.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox.corpus_checks import CORPUS, POST, SECRET, expectations, matches
from support import LAB01, ROOT, tight_limits

from grader.results import GradeResult

EMULATE = Path(__file__).resolve().parent / "emulate"
# The hostile files each environment grades besides the solution and the starter: what attacks
# the parts of the sandbox that differ there.
CONTAINMENT = ["memory_across_processes.py", "shared_memory.py", "starves_the_baseline.py", "fork_bomb.py", "daemon_keeps_pipe.py",
               "frozen_by_signals/resumes_itself_between_calls.py"]  # fmt: skip
"""Attacks on containment; in docker and nonroot no cgroup freezer is writable, so SIGSTOP freezes."""
ENVIRONMENTS: dict[str, dict[str, Any]] = {
    # the tier, guarantees that must hold and must be missing there, the hostile files
    "debian": {"mode": "bubblewrap", "held": ["filesystem", "uid", "memory", "tmp"], "missing": [], "hostile": []},
    "bwrap-0.6": {
        "mode": "bubblewrap", "held": ["filesystem", "uid", "memory", "tmp"], "missing": [],
        "hostile": ["fills_tmp_with_files.py", "memory_across_processes.py", "shared_memory.py", "sockets_beyond_unix.py"],
    },
    "docker": {
        "mode": "process", "held": ["filesystem", "uid", "pids", "tmp"], "missing": ["memory"],
        "hostile": ["reads_the_solution.py", "snoops_environment.py", "sockets_beyond_unix.py", "escape_attempts.py",
                    "kills_other_processes.py", "fills_tmp_with_files.py", "connects_to_host_sockets.py", *CONTAINMENT],
    },
    "nonroot": {"mode": "bubblewrap", "held": ["filesystem", "processes"], "missing": ["uid", "memory"], "hostile": CONTAINMENT},
}  # fmt: skip


def _needs(name: str) -> None:
    """Skip where the environment cannot be made; on CI (GRADER_REQUIRE_BWRAP=1) that is a failure."""
    missing = [tool for tool in ("bwrap", "setpriv", "capsh", "prlimit") if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()]
    why = f"the {name} environment needs {', '.join(missing)}" if missing else None
    if name != "debian" and os.geteuid() != 0:
        why = f"emulating the {name} environment needs root"
    if why and os.environ.get("GRADER_REQUIRE_BWRAP"):
        pytest.fail(why + " (CI must provide it)")
    if why:
        pytest.skip(why)


def _grade_in(name: str, tmp: Path, hostile: list[str] | None = None, **extra_env: str) -> dict[str, dict[str, Any]]:
    """Grade the environment's files there (``hostile``: others instead); {file name: result as JSON}."""
    lab = tmp / "lab" / LAB01.name
    shutil.copytree(LAB01, lab, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = lab / "manifest.toml"
    manifest.write_text(tight_limits(manifest.read_text()) + "\n[lab.worker]\nmemory_mb = 1024\n")
    hostile = ENVIRONMENTS[name]["hostile"] if hostile is None else hostile
    files = [LAB01 / "solution.py", LAB01 / "starter.py", *(CORPUS / f for f in hostile)]
    env = dict(os.environ, GRADER_SECRET_SEED=SECRET, HOME=str(tmp), **extra_env)
    command = [sys.executable, str(EMULATE / "grade.py"), str(lab), *map(str, files)]
    reachable: list[str] = []
    for path in (sys.executable, sys.prefix, sys.base_prefix, ROOT, lab, *files):
        reachable += ["--reachable", str(path)]
    if name == "bwrap-0.6":
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        (bin_dir / "bwrap").symlink_to(EMULATE / "bwrap-0.6.1")
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    elif name in ("docker", "nonroot"):
        for folder in (tmp, lab.parent):
            os.chmod(folder, 0o755)
        command = [sys.executable, str(EMULATE / "environment.py"), name, *reachable, "--", *command]
        env["TMPDIR"] = "/tmp"
    with host_sockets():
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["file"]] = entry["result"]
    assert len(results) == len(files), proc.stdout[-2000:] + proc.stderr[-3000:]
    return results


@contextlib.contextmanager
def host_sockets() -> Iterator[list[Path]]:
    """A world-writable stream socket (listening) and datagram socket on the host, as D-Bus and
    /dev/log are, for connects_to_host_sockets.py to reach for while the environment grades."""
    made, socks = [], []
    try:
        for kind, name in ((socket.SOCK_STREAM, "stream"), (socket.SOCK_DGRAM, "dgram")):
            path = Path(f"/tmp/grader-corpus-{os.getpid()}-{name}.sock")
            path.unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, kind)
            sock.bind(str(path))
            os.chmod(path, 0o777)
            if kind == socket.SOCK_STREAM:
                sock.listen(16)
            made.append(path)
            socks.append(sock)
        yield made
    finally:
        for sock in socks:
            sock.close()
        for path in made:
            path.unlink(missing_ok=True)


_GRADED: dict[str, dict[str, dict[str, Any]]] = {}


@pytest.fixture
def graded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, dict[str, Any]]]:
    """One environment's results, graded once (on the first test that needs them)."""
    _needs(request.param)
    if request.param not in _GRADED:
        _GRADED[request.param] = _grade_in(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, _GRADED[request.param]


@pytest.mark.parametrize("graded", list(ENVIRONMENTS), indirect=True)
def test_each_environment_names_its_tier_and_guarantees(graded: tuple[str, dict[str, dict[str, Any]]]) -> None:
    name, results = graded
    expected = ENVIRONMENTS[name]
    sandbox = results["solution.py"]["sandbox"]
    assert sandbox["mode"] == expected["mode"], sandbox
    assert sandbox["official_ok"] is True and sandbox["degraded"] is False, sandbox
    state = {g["name"]: g["held"] for g in sandbox["guarantees"]}
    for guarantee in ("solutions", "secret", "network", *expected["held"]):
        assert state.get(guarantee) is True, (guarantee, sandbox)
    for guarantee in expected["missing"]:
        assert state.get(guarantee) is False, (guarantee, sandbox)
        assert any(w.startswith(f"{guarantee}: ") for w in sandbox["warnings"]), sandbox["warnings"]


@pytest.mark.parametrize("graded", list(ENVIRONMENTS), indirect=True)
def test_solution_full_marks_and_starter_zero(graded: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, results = graded
    solution, starter = results["solution.py"], results["starter.py"]
    assert solution["gradable"] and solution["score"] == solution["max_score"] == 10, solution["checks"]
    assert starter["gradable"] and starter["score"] == 0
    assert all("not implemented yet" in c["message"] for c in starter["checks"] if c["status"] == "error")


@pytest.mark.parametrize(
    ("graded", "file"),
    [(name, file) for name, env in ENVIRONMENTS.items() for file in env["hostile"]],
    indirect=["graded"],
)
def test_hostile_files_get_their_verdicts(graded: tuple[str, dict[str, dict[str, Any]]], file: str) -> None:
    name, results = graded
    result = GradeResult.model_validate(results[Path(file).name])
    verdicts, max_score = expectations(CORPUS / file)
    assert result.gradable, result.error
    for check in result.checks:
        status, fragment = verdicts.get(check.id) or verdicts["*"]
        assert matches(check.status.value, status), f"{name}: {check.id}: {check.status.value} ({check.message}), expected {status}"
        assert fragment in check.message, f"{name}: {check.id}: {check.message!r} lacks {fragment!r}"
    assert result.score <= max_score
    if Path(file).name in POST:
        POST[Path(file).name](result)


def test_official_grading_refuses_a_process_tier_worker_that_keeps_uid_0(tmp_path: Path) -> None:
    """Docker's defaults where no worker uid can be leased (here: a malformed range): the worker
    would keep uid 0, which Landlock does not fully confine (root's files, sockets, processes
    where no rule reaches). Official grading refuses; nothing is graded, nothing is charged."""
    _needs("docker")
    results = _grade_in("docker", tmp_path, [], GRADER_WORKER_UIDS="not-a-range")
    for result in results.values():
        assert not result["gradable"] and result["problem"] == "infrastructure", result["error"]
        assert "a worker uid other than 0" in result["error"] and "the worker keeps uid 0" in result["error"], result["error"]
