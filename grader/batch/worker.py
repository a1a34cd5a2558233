"""A long-lived batch worker: ``python -m grader.batch.worker``, one per job slot.

It grades submission after submission with one :class:`~grader.session.Grader`, so the lab's
inputs and reference outputs (and the timing baselines) are computed once per worker, not once
per student. The channel to the batch process is trusted (grader to grader): one JSON object
per line on stdin, one per line on stdout. Student code never runs here; it runs in the
sandboxed worker each grading starts.

Messages in: ``{"op": "config", "manifest", "options", "parent"}`` once (``options``: the
batch's one :class:`~grader.session.GradingOptions`, as a mapping, this worker's slot in it),
then ``{"op": "grade", "id", "file", "out"}`` per submission, ``file`` the submission the batch
read (:meth:`~grader.discovery.SubmissionFile.to_wire`): a worker never opens a student's path.
Messages out: ``ready`` (or ``fatal``) once; ``alive`` after each check (a heartbeat for the
batch's watchdog); ``done`` with the whole result per submission (``write_failed`` when the
reports cannot be written, ``crashed`` for a grader error).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from grader.discovery import SubmissionFile
from grader.errors import OutputError
from grader.hookspecs import hookimpl
from grader.manifest import LabManifest, load_manifest
from grader.plugins import build as build_plugins
from grader.results import CheckResult
from grader.session import Grader, GradingOptions

PR_SET_PDEATHSIG = 1


class _Heartbeat:
    """A plugin that tells the batch process the worker is making progress."""

    def __init__(self, channel: TextIO) -> None:
        self.channel = channel
        self.job: int | None = None

    @hookimpl
    def grader_check_finished(self, manifest: LabManifest, result: CheckResult) -> None:
        if self.job is not None:
            send(self.channel, {"op": "alive", "id": self.job, "check": result.id})


def send(channel: TextIO, message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _die_with_parent(parent: int) -> None:
    """Get SIGKILL when the batch process dies, so a killed batch leaves no worker writing behind it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _private_channel() -> TextIO:
    """The protocol's own copy of stdout; fd 1 then points at stderr, so a stray print goes to the log."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def serve(lines: TextIO, channel: TextIO) -> int:
    first = lines.readline()
    if not first:
        return 0
    config = json.loads(first)
    _die_with_parent(int(config["parent"]))
    heartbeat = _Heartbeat(channel)
    try:
        plugins = build_plugins(extra=[heartbeat])
        manifest = load_manifest(Path(config["manifest"]), plugins.checkers())
        grader = Grader(manifest, GradingOptions(**config["options"]), plugins)
        launcher = grader.launcher()
    except Exception as exc:  # the batch reports it once and stops: every job would fail alike
        send(channel, {"op": "fatal", "error": f"{type(exc).__name__}: {exc}"})
        traceback.print_exc()
        return 3
    send(channel, {"op": "ready", "pid": os.getpid(), "sandbox": launcher.mode, "degraded": launcher.degraded})
    for line in lines:
        job = json.loads(line)
        heartbeat.job = job["id"]
        try:
            result = grader.grade_file(SubmissionFile.from_wire(job["file"]), Path(job["out"]))
        except OutputError as exc:  # the --out folder is full or gone: the batch stops, cleanly
            send(channel, {"op": "write_failed", "id": job["id"], "error": str(exc)})
            continue
        except Exception as exc:  # a grader bug on this submission: the batch retries it once
            traceback.print_exc()
            send(channel, {"op": "crashed", "id": job["id"], "error": f"{type(exc).__name__}: {exc}"})
            continue
        finally:
            heartbeat.job = None
        send(channel, {"op": "done", "id": job["id"], "result": result.model_dump(mode="json")})
    return 0


def main() -> int:
    channel = _private_channel()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the batch process decides when workers stop
    try:
        return serve(sys.stdin, channel)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
