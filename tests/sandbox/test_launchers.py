"""Isolation tiers: the probe picks the strongest, never silently; CI must run bubblewrap."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from grader.sandbox import seccomp
from grader.sandbox.launchers import Launcher, Limits, probe, worker_env


def test_ci_runs_full_isolation() -> None:
    """CI sets GRADER_REQUIRE_BWRAP=1: grading there must never be degraded."""
    if not os.environ.get("GRADER_REQUIRE_BWRAP"):
        pytest.skip("GRADER_REQUIRE_BWRAP is not set (CI sets it)")
    probe.cache_clear()
    launcher = probe()
    assert launcher.mode == "bubblewrap", launcher.warnings
    assert not launcher.degraded and not launcher.warnings


def test_bubblewrap_command_isolates() -> None:
    launcher = Launcher("bubblewrap", degraded=False, uid=61000)
    cmd = launcher.command(sys.executable, Path("/tmp/x/sub.py"), (5, 6), worker_env({}, 1), Limits())
    argv = cmd.argv
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    bwrap = next(a for a in argv if a.endswith("bwrap"))
    assert argv[: argv.index(bwrap)][0].endswith("prlimit") and "--as=4294967296" in argv and "--nproc=64" in argv
    assert argv[argv.index("--seccomp") + 1] == str(cmd.pass_fds[2])
    assert ["--ro-bind", "/tmp/x", "/sub"] == argv[argv.index("/sub") - 2 : argv.index("/sub") + 1]
    if os.geteuid() == 0:
        assert argv[argv.index("--cap-drop") + 1] == "ALL"
        assert "--reuid=61000" in argv
    repo = str(Path(__file__).resolve().parents[2])
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    assert not any(b == repo or repo.startswith(b + "/") and b != "/" for b in binds if not b.startswith(sys.prefix))
    assert cmd.submission_path == "/sub/sub.py"
    for fd in cmd.pass_fds[2:]:
        os.close(fd)


def test_degraded_tier_says_so() -> None:
    probe.cache_clear()
    try:
        launcher = probe(force="process")
    finally:
        probe.cache_clear()
    assert launcher.degraded and launcher.warnings[0].startswith("DEGRADED ISOLATION")


def test_worker_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADER_SECRET_SEED", "s3cret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    env = worker_env({"TRITON_INTERPRET": "1"}, 1)
    assert "GRADER_SECRET_SEED" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"] == "/tmp" and env["TRITON_INTERPRET"] == "1" and env["OMP_NUM_THREADS"] == "1"


@pytest.mark.skipif(not seccomp.supported(), reason="no seccomp table for this machine")
def test_seccomp_filter_blocks_namespaces_and_ip_sockets(tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "probe.py"
    script.write_text(
        "import ctypes, os, socket, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import worker\n"
        "worker.apply_seccomp(open(sys.argv[2], 'rb').read())\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "try:\n    socket.socket(socket.AF_INET)\n    print('inet ok')\nexcept OSError as e:\n    print('inet', e.errno)\n"
        "socket.socket(socket.AF_UNIX).close(); print('unix ok')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    os._exit(7)\n"
        "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    bpf = tmp_path / "filter.bpf"
    bpf.write_bytes(seccomp.build(deny_ip_sockets=True))
    boot = Path(seccomp.__file__).parent / "boot"
    out = subprocess.run([sys.executable, str(script), str(boot), str(bpf)], capture_output=True, text=True, timeout=30)
    lines = out.stdout.splitlines()
    assert "unshare -1 1" in lines, out.stdout + out.stderr
    assert "inet 1" in lines and "unix ok" in lines and "fork 7" in lines
