"""A worker started from a thread of the grader lives as long as the worker is needed.

bubblewrap's ``--die-with-parent`` and the keeper's ``PR_SET_PDEATHSIG`` fire when the *thread*
that forked them ends, not the process: a GPU worker started in the background while the CPU
checks ran was killed (SIGKILL) the moment its starting thread returned, and every GPU check of
every submission then failed "killed by SIGKILL during fused_moe" (seen on an H100, 2026-12-08).
The session's starter threads linger until the grading has closed its workers.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import LAB01

from grader.lab import Lab
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.sandbox import tiers
from grader.sandbox.client import Submission
from grader.session import Background


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(LAB01, default_plugins().checkers())


def _submission(manifest) -> Submission:
    launcher = tiers.choose("auto", False, True, manifest.directory, manifest.lab.worker.memory_mb)
    source = (LAB01 / "solution.py").read_bytes()
    return Submission(source, "solution.py", manifest, launcher)


def _call(sub: Submission) -> np.ndarray:
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    w1 = np.eye(3, 4)
    w2 = np.eye(4, 3)
    return sub.call("expert_mlp", {"x": x, "w1": w1, "w2": w2}, {"n": 2, "D": 3, "F": 4})["y"]


def test_a_worker_started_by_a_lingering_thread_answers_after_the_start_returns(manifest) -> None:
    sub = _submission(manifest)
    try:
        starter = Background(sub.start, linger=True)
        starter.join()
        assert sub.import_failure is None
        out = _call(sub)
        assert out.shape == (2, 3) and np.allclose(out, np.arange(6).reshape(2, 3))
        assert sub.restarts == 1, "the worker that answered is not the one the thread started"
    finally:
        sub.close()
        starter.release()


def test_a_worker_whose_starting_thread_ended_is_gone(manifest) -> None:
    """The mechanism itself, so that a change to how workers are tied to their parent is noticed:
    without lingering, the worker dies with the thread that started it."""
    sub = _submission(manifest)
    try:
        starter = Background(sub.start)
        starter.join()
        starter._thread.join()
        assert sub.import_failure is None
        worker = sub._worker.proc
        try:
            worker.wait(timeout=5)
        except Exception:  # noqa: BLE001 - still alive: the assertion below says so
            pass
        assert worker.poll() is not None, "the worker outlived the thread that started it"
    finally:
        sub.close()
