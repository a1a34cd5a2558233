"""A grading's own files (its private copy, its worker cgroups) survive other graders' sweeps.

Two graders that share a temp folder and a cgroup tree but not a pid namespace (containers on
one node, Apptainer with ``--pid``, ``unshare --pid``) cannot see each other's pids; a sweep that
took "no such pid" for "dead grader" deleted the copy of a grading in progress, and the correct
solution it was grading scored 0, gradable. Sweeps now take only folders no one holds a lock on;
and a copy that is missing or changed when the worker starts is the grader's failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import LAB01, ROOT

from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.sandbox import client
from grader.sandbox.cgroups import PREFIX as CGROUP_PREFIX
from grader.sandbox.cgroups import WorkerCgroup
from grader.session import Grader, GradingOptions

SOLUTION = LAB01 / "solution.py"


@pytest.fixture
def shared_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder this process and the other grader both use (``$TMPDIR``)."""
    import tempfile

    folder = tmp_path / "shared-tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.delenv("SLURM_TMPDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)
    client._sweep_stale_copies.cache_clear()
    return folder


def _in_new_pid_namespace(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _killed_mid_grading(code: str, env: dict[str, str]) -> Path:
    """Run ``code`` (it prints a folder it holds) in a process that then dies without cleaning up."""
    proc = subprocess.run([sys.executable, "-c", code + "; import os, sys; sys.stdout.flush(); os._exit(0)"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return Path(proc.stdout.strip().splitlines()[-1])


def test_a_grader_in_another_pid_namespace_sweeps_only_what_no_one_holds(shared_tmp: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to start a grader in a pid namespace of its own")
    env = dict(os.environ)
    probe = _in_new_pid_namespace("true", env=env)
    if probe.returncode != 0:
        pytest.skip(f"no new pid namespace here: {probe.stderr.strip()}")
    manifest = load_manifest(LAB01, default_plugins().checkers())
    launcher = Grader(manifest, GradingOptions()).launcher()

    # This process is grader A: a grading in progress, its copy written, its worker not yet started.
    mine = client.Submission(SOLUTION.read_bytes(), "solution.py", manifest, launcher)
    my_cgroup = WorkerCgroup(None, None, launcher.cgroups) if launcher.cgroups.places else None
    # What killed graders left: a copy and a worker cgroup nobody holds any more.
    stale_copy = _killed_mid_grading(
        "from grader.sandbox import client, leases; print(leases.hold(client.copies_root(), client.COPY_PREFIX).path)", env
    )
    stale_cgroups = []
    if my_cgroup is not None:
        code = "from grader.sandbox.cgroups import WorkerCgroup; c = WorkerCgroup(None, None); print('\\n'.join(map(str, c._folders)))"
        proc = subprocess.run([sys.executable, "-c", code + "; import os, sys; sys.stdout.flush(); os._exit(0)"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        stale_cgroups = [Path(line) for line in proc.stdout.split()]
        assert stale_cgroups and all(p.is_dir() for p in stale_cgroups)
    try:
        # Grader B does not see A's pid: a sweep by "is that pid alive?" would take A's files.
        blind = _in_new_pid_namespace(
            sys.executable, "-c", f"import os; os.kill({os.getpid()}, 0)", env=env
        )  # fmt: skip
        assert blind.returncode != 0 and "ProcessLookupError" in blind.stderr
        assert _in_new_pid_namespace("test", "-e", f"/proc/{os.getpid()}", env=env).returncode == 1

        # Grader B grades a submission of its own in that namespace, sharing the temp folder and cgroups.
        other = _in_new_pid_namespace(
            sys.executable, "-m", "grader", "submit", str(SOLUTION), "-e", "lab-01", "--out", str(shared_tmp.parent / "b"), env=env
        )  # fmt: skip
        assert other.returncode == 0, other.stderr
        theirs = json.loads((shared_tmp.parent / "b" / "result.json").read_text())
        assert theirs["gradable"] and all(c["status"] == "passed" for c in theirs["checks"] if c["kind"] != "cpu-speedup")

        # B's sweeps took what nobody held, and nothing of A's.
        assert not stale_copy.exists()
        assert mine._path.read_bytes() == SOLUTION.read_bytes()
        for folder in stale_cgroups:
            assert not folder.exists(), folder
        if my_cgroup is not None:
            assert all(folder.is_dir() for folder in my_cgroup._folders)
        # A's grading goes on: its worker imports the copy and defines every function.
        assert all(mine.defines(name) for name in manifest.functions), mine.import_failure
    finally:
        mine.close()
        held = list(my_cgroup._folders) if my_cgroup is not None else []
        if my_cgroup is not None:
            my_cgroup.remove()
    assert not mine._path.parent.exists()
    assert not [p for p in shared_tmp.iterdir() if p.name.startswith(client.COPY_PREFIX)]
    assert all(p.name.startswith(CGROUP_PREFIX) and not p.exists() for p in held)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda path: path.unlink(), "(solution.py: No such file or directory)"),
        # bubblewrap cannot bind a folder that is gone: the worker does not even start
        (lambda path: shutil.rmtree(path.parent), "(solution.py: No such file or directory)|bwrap: Can't find source path"),
        (lambda path: path.write_bytes((LAB01 / "starter.py").read_bytes()), "(solution.py: its content is not what the grader wrote)"),
    ],
    ids=["file deleted", "folder swept", "content changed"],
)
def test_a_copy_missing_or_changed_before_the_import_is_the_grader_s_failure(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch, damage, why: str
) -> None:
    manifest = load_manifest(LAB01, default_plugins().checkers())
    grader = Grader(manifest, GradingOptions())
    start = client.Submission.start

    def damaged_start(self: client.Submission) -> None:
        if self.restarts == 0 and self._path.exists():
            damage(self._path)  # what another grader's sweep did between the copy and the import
        start(self)

    monkeypatch.setattr(client.Submission, "start", damaged_start)
    result = grader.grade(SOLUTION)
    error = result.error or ""
    assert result.gradable is False and result.problem is not None
    own, _, bwrap = why.partition("|")
    if not (bwrap and bwrap in error):
        assert f"the grader's private copy of the submission is not what the grader wrote {own}" in error, error
        assert "the grader's failure, not the student's; grade it again" in error
    assert all(c.status.value == "error" and c.message.startswith("not graded: ") for c in result.checks)

    monkeypatch.setattr(client.Submission, "start", start)  # graded again, nothing in the way
    again = grader.grade(SOLUTION)
    assert again.gradable is True and again.score == again.max_score == 10
