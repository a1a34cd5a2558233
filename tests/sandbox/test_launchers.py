"""Isolation tiers: the probe picks the strongest, never silently; each names its guarantees;
bubblewrap's command line follows what the installed bwrap has; official grading refuses a tier
that leaves solutions, secret or network in reach, telling the course staff what to do."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import LAB01

from grader.sandbox import bwrap, cgroups, seccomp
from grader.sandbox.launchers import OFFICIAL, Launcher, assess, hidden_from_others, refusal, worker_env
from grader.sandbox.tiers import choose, probe

V080 = bwrap.detect("/usr/bin/bwrap") if Path("/usr/bin/bwrap").exists() else None
# bubblewrap 0.4.0's options (Debian 11, Ubuntu 20.04): no --perms, --clearenv, --chmod, --size.
V040 = (
    "--args --unshare-all --share-net --unshare-user --unshare-user-try --unshare-ipc --unshare-pid --unshare-net "
    "--unshare-uts --unshare-cgroup --unshare-cgroup-try --userns --userns2 --pidns --uid --gid --hostname --chdir "
    "--setenv --unsetenv --lock-file --sync-fd --bind --bind-try --dev-bind --dev-bind-try --ro-bind --ro-bind-try "
    "--remount-ro --exec-label --file-label --proc --dev --tmpfs --mqueue --dir --file --bind-data --ro-bind-data "
    "--symlink --seccomp --block-fd --userns-block-fd --info-fd --json-status-fd --new-session --die-with-parent "
    "--as-pid-1 --cap-add --cap-drop --help --version"
)


def test_ci_runs_full_isolation() -> None:
    """CI sets GRADER_REQUIRE_BWRAP=1: grading there must hold every guarantee."""
    if not os.environ.get("GRADER_REQUIRE_BWRAP"):
        pytest.skip("GRADER_REQUIRE_BWRAP is not set (CI sets it)")
    probe.cache_clear()
    launcher = assess(probe(), LAB01, 4096)
    assert launcher.mode == "bubblewrap" and launcher.drop_uid, launcher.notes
    assert launcher.official_ok and not launcher.degraded and not launcher.warnings, launcher.warnings
    assert all(g.held for g in launcher.guarantees), [g for g in launcher.guarantees if not g.held]


@pytest.mark.skipif(V080 is None, reason="needs Debian's bubblewrap")
def test_bubblewrap_command_isolates() -> None:
    with_memory_cgroup = cgroups.Support(places={"memory": cgroups.Place(Path("/sys/fs/cgroup"), True)})
    launcher = Launcher("bubblewrap", drop_uid=True, bwrap=V080, cgroups=with_memory_cgroup)
    cmd = launcher.command(sys.executable, Path("/tmp/x/sub.py"), (5, 6), worker_env({}, 1), launcher.limits(4096), 1900000001)
    argv = cmd.argv
    assert argv[:4] == [sys.executable, "-I", "-S", str(Path(cgroups.__file__).parent / "keeper.py")]
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    prlimit = next(i for i, a in enumerate(argv) if a.endswith("prlimit"))
    assert argv[prlimit + 1 :].index(V080.path) > 0 and "--data=4294967296" in argv[prlimit : argv.index(V080.path)]
    # the process limit is set inside the sandbox, after bwrap made its namespaces; no address-space
    # limit on the command line: the worker sets it from its own mappings (Limits.worker_init)
    inner = next(i for i, a in enumerate(argv) if a.endswith("prlimit") and i > argv.index(V080.path))
    assert argv[inner + 1 : inner + 3] == ["--nproc=64", "--"] and not any(a.startswith("--as=") for a in argv)
    assert launcher.limits(4096).worker_init() == {"address_space_extra": 4096 << 20}
    assert argv[argv.index("--seccomp") + 1] == str(cmd.pass_fds[2])
    assert ["--ro-bind", "/tmp/x", "/sub"] == argv[argv.index("/sub") - 2 : argv.index("/sub") + 1]
    assert ["--size", str(256 << 20), "--tmpfs", "/tmp"] in [argv[i : i + 4] for i in range(len(argv))]
    if os.geteuid() == 0:
        assert argv[argv.index("--cap-drop") + 1] == "ALL"
        assert "--reuid=1900000001" in argv
    repo = str(Path(__file__).resolve().parents[2])
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    assert not any(b == repo or repo.startswith(b + "/") and b != "/" for b in binds if not b.startswith(sys.prefix))
    assert cmd.submission_path == "/sub/sub.py"
    for fd in cmd.pass_fds[2:]:
        os.close(fd)


def test_without_a_memory_cgroup_processes_times_private_memory_stay_within_the_budget() -> None:
    launcher = Launcher("bubblewrap", drop_uid=True, bwrap=V080)
    for budget, heavy, (share, count) in ((4096, False, (1024, 4)), (1024, False, (256, 4)), (4096, True, (1024, 4)), (2048, True, (1024, 2))):
        limits = launcher.limits(budget, heavy=heavy)
        assert (limits.data_mb, limits.address_space_mb, limits.nproc) == (share, share, count)
        assert limits.data_mb * limits.nproc <= budget and limits.memory_mb is None


def _fake_bwrap(tmp_path: Path, version: str, options: str) -> Path:
    path = tmp_path / "bwrap"
    help_lines = "\\n".join(f"    {o}   something" for o in options.split())
    path.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "bubblewrap {version}"; else printf "usage: bwrap\\n{help_lines}\\n"; fi\n')
    path.chmod(0o755)
    return path


def test_options_are_read_from_the_binary(tmp_path: Path) -> None:
    info = bwrap.detect(str(_fake_bwrap(tmp_path, "0.4.0", V040)))
    assert info is not None and info.version == "0.4.0" and not info.missing()
    assert info.has("--ro-bind-data") and not info.has("--perms") and not info.has("--size") and not info.has("--clearenv")
    (tmp_path / "broken").mkdir()
    broken = bwrap.detect(str(_fake_bwrap(tmp_path / "broken", "9.9", "--help --version --ro-bind")))
    assert broken is not None and "--unshare-pid" in broken.missing()


def test_a_bwrap_without_perms_clearenv_or_size_gets_a_command_it_accepts(tmp_path: Path) -> None:
    """0.4's option set: the environment travels as bwrap's own, /tmp is a private host folder,
    the passwd copy is bound from a readable file; no option 0.4 lacks appears."""
    info = bwrap.detect(str(_fake_bwrap(tmp_path, "0.4.0", V040)))
    launcher = Launcher("bubblewrap", drop_uid=True, bwrap=info)
    private = tmp_path / "private-tmp"
    private.mkdir()
    cmd = launcher.command(sys.executable, Path("/tmp/x/sub.py"), (5, 6), worker_env({"X": "1"}, 1), launcher.limits(4096), 1900000001, tmp=private)
    options = [a for a in cmd.argv if a.startswith("--") and a != "--"]
    assert set(options) <= set(V040.split()) | {"--cgroup", "--data", "--cpu", "--nproc", "--fsize", "--nofile", "--core"} | {
        a for a in options if a.startswith(("--data=", "--cpu=", "--nproc=", "--fsize=", "--nofile=", "--core=", "--reuid=", "--regid=", "--clear-groups", "--inh-caps=", "--bounding-set="))
    }, options
    assert ["--bind", str(private), "/tmp"] == cmd.argv[cmd.argv.index(str(private)) - 1 : cmd.argv.index(str(private)) + 2]
    assert cmd.env["X"] == "1" and "--setenv" not in cmd.argv
    passwd = cmd.argv[cmd.argv.index("/etc/passwd") - 1]
    assert Path(passwd).stat().st_mode & 0o004 and "1900000001" in Path(passwd).read_text()
    for path in cmd.cleanup:
        path.unlink()
    for fd in cmd.pass_fds[2:]:
        os.close(fd)


def _weak() -> Launcher:
    """The process tier as a default Docker container on an old kernel leaves it: no Landlock, no uid of its own."""
    return Launcher("process", drop_uid=False, landlock=0, notes={"bubblewrap": "bubblewrap cannot start here (x)"})


def test_a_weak_tier_says_what_it_lacks() -> None:
    launcher = assess(_weak(), LAB01)
    assert launcher.degraded and not launcher.official_ok
    assert launcher.warnings[0].startswith("DEGRADED ISOLATION: solutions, secret, "), launcher.warnings[0]
    held = {g.name: g.held for g in launcher.guarantees}
    assert held["network"] is seccomp.supported() and not held["filesystem"] and not held["uid"]


@pytest.mark.parametrize(
    ("root", "drop_uid", "abi", "ok", "open_"),
    [
        (True, True, 7, True, ""),
        (True, False, 7, False, "uid open (the worker keeps uid 0"),  # Landlock does not cover all that uid 0 owns
        (False, False, 6, True, ""),
        (False, False, 5, False, "processes open"),  # the grader's own uid, and nothing scopes its signals
        (True, True, 5, True, ""),  # a uid of its own cannot signal the grader anyway
    ],
)
def test_the_process_tier_is_official_only_with_a_uid_not_0_and_signals_kept_in(
    monkeypatch: pytest.MonkeyPatch, root: bool, drop_uid: bool, abi: int, ok: bool, open_: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000)
    launcher = assess(Launcher("process", drop_uid=drop_uid, landlock=abi), LAB01)
    assert launcher.official_ok is ok, launcher.warnings
    if not ok:
        assert open_ in refusal(launcher) and "without bubblewrap" in refusal(launcher)
    assert assess(dataclasses.replace(launcher, mode="bubblewrap", bwrap=None), LAB01).official_ok  # namespaces hold these


def test_official_grading_refuses_and_tells_the_staff_what_to_do() -> None:
    message = refusal(assess(_weak(), LAB01))
    assert "solutions open" in message and "secret open" in message
    assert "For the course staff:" in message and "CAP_SYS_ADMIN" in message and "Landlock" in message
    assert "--allow-unsandboxed" in message  # named last, as the staff's choice, never as the fix


def test_landlock_alone_keeps_the_official_guarantees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # a root grader must also hand the worker a uid of its own
    launcher = assess(Launcher("process", drop_uid=False, landlock=6), LAB01)
    assert launcher.official_ok, launcher.warnings
    assert {g.name for g in launcher.guarantees if g.held} >= set(OFFICIAL) | {"filesystem", "processes"}


def test_root_only_lab_files_keep_solutions_from_a_worker_uid() -> None:
    lab = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own folders are closed to others already
    lab.chmod(0o755)
    try:
        _check_hidden(lab)
    finally:
        shutil.rmtree(lab)


def _check_hidden(lab: Path) -> None:
    for name in ("solution.py", "lab.py", "starter.py", "README.md"):
        (lab / name).write_text("x")
        (lab / name).chmod(0o644)
    assert not hidden_from_others(lab)
    assert not assess(Launcher("process", drop_uid=True), lab).official_ok
    for name in ("solution.py", "lab.py"):
        (lab / name).chmod(0o600)
    assert hidden_from_others(lab)  # the handout and the starter may stay readable
    assert assess(Launcher("process", drop_uid=True), lab).official_ok
    (lab / "lab.py").chmod(0o644)
    lab.chmod(0o700)
    assert hidden_from_others(lab)  # a folder others cannot enter hides everything in it


def test_choose_names_an_unknown_tier() -> None:
    from grader.errors import InfrastructureError

    with pytest.raises(InfrastructureError, match="unknown sandbox tier 'jail'"):
        choose("jail")


def test_worker_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADER_SECRET_SEED", "s3cret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    env = worker_env({"TRITON_INTERPRET": "1"}, 1)
    assert "GRADER_SECRET_SEED" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"] == "/tmp" and env["TRITON_INTERPRET"] == "1" and env["OMP_NUM_THREADS"] == "1"


@pytest.mark.skipif(not seccomp.supported(), reason="no seccomp table for this machine")
def test_seccomp_filter_allows_only_socket_pairs_and_no_hidden_memory(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(
        "import ctypes, os, socket, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import worker\n"
        "worker.apply_seccomp(open(sys.argv[2], 'rb').read())\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "print('shmget', libc.shmget(0, 4096, 0o1600), ctypes.get_errno())\n"
        "for name, fam, kind in (('inet', socket.AF_INET, socket.SOCK_STREAM), ('vsock', socket.AF_VSOCK, socket.SOCK_STREAM),\n"
        "                        ('netlink', socket.AF_NETLINK, socket.SOCK_RAW)):\n"
        "    try:\n        socket.socket(fam, kind)\n        print(name, 'ok')\n    except OSError as e:\n        print(name, e.errno)\n"
        "try:\n    os.memfd_create('x')\n    print('memfd ok')\nexcept OSError as e:\n    print('memfd', e.errno)\n"
        "for name, fn in (('unix', lambda: socket.socket(socket.AF_UNIX)), ('pair', socket.socketpair),\n"
        "                 ('seqpacket', lambda: socket.socketpair(type=socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)),\n"
        "                 ('dgram', lambda: socket.socketpair(type=socket.SOCK_DGRAM))):\n"
        "    try:\n        fn()\n        print(name, 'ok')\n    except OSError as e:\n        print(name, e.errno)\n"
        "for name, nr in (('statmount', 457), ('listmount', 458), ('open_tree_attr', 467), ('unknown', 470)):\n"
        "    print(name, libc.syscall(nr, 0, 0, 0, 0), ctypes.get_errno())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    os._exit(7)\n"
        "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    bpf = tmp_path / "filter.bpf"
    bpf.write_bytes(seccomp.build())
    boot = Path(seccomp.__file__).parent / "boot"
    out = subprocess.run([sys.executable, str(script), str(boot), str(bpf)], capture_output=True, text=True, timeout=30)
    lines = out.stdout.splitlines()
    expected_lines = ("unshare -1 1", "shmget -1 1", "inet 1", "vsock 1", "netlink 1", "memfd 1", "unix 1", "pair ok",
                      "seqpacket ok", "dgram 1", "statmount -1 1", "listmount -1 1", "open_tree_attr -1 1", "unknown -1 38", "fork 7")  # fmt: skip
    for expected in expected_lines:
        assert expected in lines, out.stdout + out.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root, to lease a worker uid")
def test_an_interpreter_other_users_cannot_reach_is_named_with_what_to_do() -> None:
    """pyenv, conda or uv under a 0700 home: a worker uid cannot use that Python. The probe says
    which folder is in the way and what the course staff can do, before anything is graded."""
    import sysconfig

    from grader.sandbox.tiers import _configure

    base = Path(tempfile.mkdtemp(prefix="grader-home-"))  # under /tmp, itself reachable by everyone
    try:
        base.chmod(0o755)
        private = base / "alice"
        private.mkdir(mode=0o700)
        venv = private / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--copies", "--without-pip", str(venv)], check=True)
        site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
        (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
        python = str(venv / "bin" / "python")
        launcher, why = _configure(Launcher("process", landlock=0), python)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert launcher is not None and not launcher.drop_uid, why
    note = launcher.notes["uid"]
    assert f"a worker uid cannot use this grader's Python {python}: {private} is mode 0700, so other users cannot reach" in note
    assert "Install Python and the grader's virtual environment where other users can read them" in note
    assert any(w.startswith("uid: ") and "a worker uid cannot use this grader's Python" in w for w in assess(launcher, LAB01).warnings)

