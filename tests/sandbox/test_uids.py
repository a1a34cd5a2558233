"""Worker uids: never an account's, never one a running process holds, never shared by two
leases, from a configurable range; and a grading never kills a process it did not start."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from grader.sandbox import uids
from grader.sandbox.uids import UidLease, candidate_ranges, configured_range, leased

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")


@pytest.fixture(autouse=True)
def private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(uids.LOCKS_ENV, str(tmp_path / "locks"))


def test_default_range_is_far_from_distribution_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(uids.RANGE_ENV, raising=False)
    first, last = configured_range()
    assert first > 1_879_048_191  # above systemd-nspawn's container range (and sub-uids, slurm, dynamic users)
    assert last < 2_147_352_576  # below systemd's foreign range, and below 2^31
    assert last - first + 1 == 1 << 27


@pytest.mark.parametrize("text", ["12", "5000-4000", "10-20", "a-b", "2000-4294967295"])
def test_bad_range_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(uids.RANGE_ENV, text)
    with pytest.raises(ValueError, match=f"{uids.RANGE_ENV}="):
        configured_range()


def test_a_user_namespace_that_does_not_map_the_range_uses_what_it_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(uids.RANGE_ENV, raising=False)
    monkeypatch.setattr(uids, "_mapped", lambda: [(0, 65535)])  # rootless Podman's container
    assert candidate_ranges() == [uids.NAMESPACE_FALLBACK]
    monkeypatch.setenv(uids.RANGE_ENV, "1900000000-1900000100")
    assert candidate_ranges() == []  # an explicit range is never silently replaced
    with pytest.raises(RuntimeError, match="not mapped in this user namespace"):
        UidLease()


def test_never_an_account(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = 65534
    monkeypatch.setenv(uids.RANGE_ENV, f"{nobody}-{nobody + 1}")
    monkeypatch.setattr(uids, "uids_in_use", set)
    for _ in range(10):
        lease = UidLease()
        assert lease.uid == nobody + 1  # 65534 is nobody in /etc/passwd
        lease.release()


def test_two_leases_never_share_and_release_frees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(uids.RANGE_ENV, "1900000000-1900000001")
    a, b = UidLease(), UidLease()
    assert {a.uid, b.uid} == {1900000000, 1900000001}
    assert leased(a.uid) and leased(b.uid)
    with pytest.raises(RuntimeError, match="no free worker uid"):
        UidLease()
    a.release()
    assert not leased(a.uid) and not (uids.lock_dir() / f"{a.uid}.lock").exists()
    c = UidLease()
    assert c.uid == a.uid
    b.release()
    c.release()


@ROOT_ONLY
def test_never_a_uid_a_running_process_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = 1900000010
    monkeypatch.setenv(uids.RANGE_ENV, f"{busy}-{busy + 1}")
    other = subprocess.Popen(["setpriv", f"--reuid={busy}", f"--regid={busy}", "--clear-groups", "sleep", "60"])
    try:
        time.sleep(0.2)
        for _ in range(10):
            lease = UidLease()
            assert lease.uid == busy + 1
            lease.release()
    finally:
        other.kill()
        other.wait()


@ROOT_ONLY
def test_a_grading_never_kills_a_process_it_did_not_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A process of a uid inside the worker range that no grading leased survives a grading
    whose submission daemonises and forks (so the grading kills every process of its own uid)."""
    from sandbox.corpus_checks import CORPUS
    from support import LAB01

    from grader.manifest import load_manifest
    from grader.plugins import default as default_plugins
    from grader.sandbox.tiers import probe
    from grader.session import Grader

    busy = 1900000020
    monkeypatch.setenv(uids.RANGE_ENV, f"{busy}-{busy + 3}")
    bystander = subprocess.Popen(["setpriv", f"--reuid={busy}", f"--regid={busy}", "--clear-groups", "sleep", "120"])
    try:
        time.sleep(0.2)
        launcher = probe()
        grader = Grader(load_manifest(LAB01, default_plugins().checkers()), launcher=launcher)
        result = grader.grade(CORPUS / "daemon_keeps_pipe.py")
        assert result.gradable, result.error
        assert bystander.poll() is None, "the grading killed a process it did not start"
    finally:
        bystander.kill()
        bystander.wait()
