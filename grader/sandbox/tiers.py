"""Choosing the isolation tier: the strongest that starts here, each weaker configuration tried
in turn, and official grading's refusal of a tier that leaves solutions, the secret seed or the
network within the submission's reach.

A tier is proven by starting a real worker in it (:func:`grader.sandbox.client.probe_worker`),
so this module sits above both the tiers (``launchers``) and the client that starts workers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from grader.errors import InfrastructureError
from grader.sandbox import bwrap as bwrap_detect
from grader.sandbox import cgroups
from grader.sandbox.boot import landlock
from grader.sandbox.client import probe_worker
from grader.sandbox.launchers import BOOT_DIR, TIERS, Launcher, Limits, assess, blocked_for_others, refusal, worker_env
from grader.sandbox.uids import UidLease


def run_in_sandbox(launcher: Launcher, code: str, python: str = sys.executable) -> tuple[bool, str]:
    """Run ``python -c code`` through the tier's real command line in place of the worker (as a
    leased uid); whether it exited 0, and the last line it printed (stderr first)."""
    return _run_code(launcher, python, code)


def _try(argv: list[str], pass_fds: tuple[int, ...], env: dict[str, str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            argv, pass_fds=pass_fds, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, timeout=30, start_new_session=True,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    text = (proc.stderr or proc.stdout or b"").decode(errors="replace").strip().splitlines()
    return proc.returncode == 0, (text[-1] if text else f"exit status {proc.returncode}")


def _run_code(launcher: Launcher, python: str, code: str) -> tuple[bool, str]:
    lease = UidLease() if launcher.drop_uid else None
    r, w = os.pipe()
    try:
        cmd = launcher.command(python, BOOT_DIR / "worker.py", (r, w), worker_env({}, 1), Limits(), lease.uid if lease else None)
        extra = tuple(fd for fd in cmd.pass_fds if fd not in (r, w))
        try:
            return _try(cmd.argv[:-3] + ["-c", code], extra, cmd.env)
        finally:
            for fd in extra:
                os.close(fd)
    finally:
        os.close(r)
        os.close(w)
        if lease is not None:
            lease.release()


def _starts(launcher: Launcher, python: str) -> tuple[bool, str]:
    """Whether a worker comes up in this configuration and confirms it (see client.launch)."""
    return probe_worker(launcher, python)


def _configure(base: Launcher, python: str) -> tuple[Launcher | None, str]:
    """The strongest configuration of ``base``'s tier that starts, trying weaker ones in turn
    (no uid of its own, no Landlock, no cgroup); None and the first reason if none does."""
    root = os.geteuid() == 0
    drops = [True, False] if root and shutil.which("setpriv") else [False]
    abis = [base.landlock, 0] if base.landlock else [0]
    groups = [base.cgroups, None] if base.cgroups.places else [base.cgroups]
    failures: list[tuple[Launcher, str]] = []
    for drop in drops:
        for abi in abis:
            for support in groups:
                if support is None:
                    why = next((w for c, w in failures if c.cgroups.places), "")
                    support = cgroups.Support(missing={f: f"the worker could not enter its cgroup ({why})" for f in cgroups.FEATURES})
                candidate = dataclasses.replace(base, drop_uid=drop, landlock=abi, cgroups=support)
                ok, why = _starts(candidate, python)
                if not ok:
                    failures.append((candidate, why))
                    continue
                notes = dict(base.notes)
                uid_failure = next((w for c, w in failures if c.drop_uid), None)
                if root and not drop:
                    notes["uid"] = unreadable_python(python, uid_failure) if uid_failure else "setpriv (util-linux) is not installed"
                ll_failure = next((w for c, w in failures if c.landlock and c.drop_uid == drop), None)
                if base.landlock and not abi and ll_failure:
                    notes["landlock"] = f"Landlock could not be applied ({ll_failure})"
                candidate.notes = notes
                return candidate, ""
    if not failures:
        return None, "no configuration to try"
    return None, unreadable_python(python, failures[0][1]) if root and blocked_for_others(python) else failures[0][1]


def unreadable_python(python: str, failure: str) -> str:
    """What is wrong when a worker uid cannot run ``python``, and what the course staff can do."""
    blocked = blocked_for_others(python)
    why = f"{blocked} ({failure})" if blocked else failure
    return (
        f"a worker uid cannot use this grader's Python {python}: {why}. Install Python and the grader's virtual "
        "environment where other users can read them (under /usr or /opt, every folder on the way mode 0755: "
        "e.g. uv python install --install-dir /opt/python, or pyenv with PYENV_ROOT=/opt/pyenv)"
    )


@functools.lru_cache(maxsize=4)
def probe(python: str = sys.executable, gpu: bool = False, force: str | None = None) -> Launcher:
    """The strongest tier that starts on this machine (``force`` names one: 'bubblewrap' or 'process').
    RuntimeError when the forced tier (or no tier at all) can start."""
    if force is not None and force not in TIERS:
        raise RuntimeError(f"unknown sandbox tier {force!r} (one of {', '.join(TIERS)})")
    notes: dict[str, str] = {}
    support = cgroups.support()
    if force in (None, "bubblewrap"):
        path = shutil.which("bwrap")
        info = bwrap_detect.detect(path) if path else None
        if path is None:
            notes["bubblewrap"] = "bubblewrap is not installed"
        elif info is None:
            notes["bubblewrap"] = f"{path} did not answer --help"
        elif info.missing():
            notes["bubblewrap"] = f"{info.describe()} lacks {', '.join(info.missing())}"
        elif not shutil.which("prlimit"):
            notes["bubblewrap"] = "prlimit (util-linux) is not installed"
        else:
            launcher, why = _configure(Launcher("bubblewrap", gpu=gpu, bwrap=info, cgroups=support), python)
            if launcher is not None:
                launcher.notes = {**notes, **launcher.notes}
                return launcher
            notes["bubblewrap"] = f"{info.describe()} cannot start a sandbox here ({why})"
        if force == "bubblewrap":
            raise RuntimeError(notes["bubblewrap"])
    if not shutil.which("prlimit"):
        raise RuntimeError("prlimit (util-linux) is not installed")
    abi = landlock.abi()
    if not abi:
        notes["landlock"] = "this kernel offers no Landlock (Linux 5.13+), or a seccomp policy forbids it"
    launcher, why = _configure(Launcher("process", gpu=gpu, landlock=abi, cgroups=support), python)
    if launcher is None:
        raise RuntimeError(f"no worker could start: {why}")
    launcher.notes = {**notes, **launcher.notes}
    return launcher


def choose(
    sandbox: str = "auto",
    official: bool = False,
    allow_unsandboxed: bool = False,
    lab_dir: Path | None = None,
    memory_mb: int | None = None,
) -> Launcher:
    """The launcher for grading the lab in ``lab_dir`` (memory budget ``memory_mb``): the tier
    ``sandbox`` names ('auto' for the strongest here), with its guarantees. Official grading (LMS, batch, --official) refuses a
    tier that leaves the solutions, the secret seed or the network within reach, unless allowed."""
    try:
        launcher = assess(probe(sys.executable, False, None if sandbox == "auto" else sandbox), lab_dir, memory_mb)
    except RuntimeError as exc:
        raise InfrastructureError(f"the {sandbox} sandbox cannot start here: {exc}") from None
    if official and not launcher.official_ok and not allow_unsandboxed:
        raise InfrastructureError(refusal(launcher))
    return launcher
