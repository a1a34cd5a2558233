"""A submission as the checkers see it: functions to call across the process boundary.

The submission is copied into a private folder and imported by a worker in the sandbox; the
grader never imports it. Each call sends fresh copies of the inputs, waits under a deadline,
and hands the answer to :mod:`grader.sandbox.values` for validation. Anything wrong ends as a
:class:`SubmissionFault` carrying the status it earns: ``error`` for raising, hanging, crashing
or breaking a rule, ``failed`` for a wrong kind of answer.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grader.errors import InfrastructureError
from grader.manifest import LabManifest
from grader.results import Status
from grader.sandbox.launchers import Launcher, Limits, WorkerCommand, worker_env
from grader.sandbox.process import (
    WorkerDied,
    WorkerProcess,
    WorkerProtocolError,
    WorkerTimeout,
)
from grader.sandbox.uids import UidLease
from grader.sandbox.values import (
    MAX_MESSAGE_BYTES,
    Outputs,
    Reply,
    SubmissionFault,
    decode_outputs,
    dtype_name,
    encode_input,
    format_error,
    read_reply,
)

MAX_RESTARTS = 8
COPY_PREFIX = "grader-sub-"
OVERALL = "the grading's overall deadline passed"


class Submission:
    """A submission's functions, callable from the grader, each call under a deadline."""

    def __init__(
        self,
        source: bytes,
        filename: str,
        manifest: LabManifest,
        launcher: Launcher,
        slot: int = 0,
        torch_device: str | None = None,
        deadline: float | None = None,
    ) -> None:
        """``deadline`` (time.monotonic) ends every call still running then: the grading's overall deadline."""
        self.manifest = manifest
        self.deadline = deadline
        self.launcher = launcher
        self.slot = slot
        self.torch_device = torch_device
        self.filename = filename
        self.source = source
        _sweep_stale_copies()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-"))
        os.chmod(self._dir, 0o755)
        self._path = self._dir / _safe_name(filename)
        self._path.write_bytes(source)
        os.chmod(self._path, 0o644)
        self._worker: WorkerProcess | None = None
        self._available: dict[str, bool] = {}
        self.import_failure: str | None = None
        self.import_traceback = ""
        self._timed_out: dict[str, float] = {}
        self.restarts = 0
        self._calls = 0
        self._output: list[str] = []
        settings = manifest.lab.worker
        gpu = torch_device is not None and torch_device.startswith("cuda")
        self._limits = Limits(
            address_space_mb=None if gpu else settings.memory_mb,
            nproc=512 if gpu else 64,
            cpu_s=600 if gpu else 120,
        )
        self._env = worker_env({**settings.env, **(settings.gpu_env if gpu else settings.cpu_env)}, settings.threads)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and import the submission (idempotent); sets ``import_failure``."""
        if self._worker is not None or self.import_failure is not None:
            return
        if self.restarts > MAX_RESTARTS:
            self.import_failure = f"the worker crashed {self.restarts} times; grading of the remaining calls stopped"
            return
        self.restarts += 1
        lab = self.manifest.lab

        try:
            lease = UidLease(self.launcher.uid, self.slot * 8) if self.launcher.uid is not None else None
        except RuntimeError as exc:
            raise InfrastructureError(str(exc)) from None

        def build(fds: tuple[int, int]) -> WorkerCommand:
            uid = lease.uid if lease else None
            return self.launcher.command(sys.executable, self._path, fds, self._env, self._limits, uid)

        try:
            worker = WorkerProcess(build, MAX_MESSAGE_BYTES, lease)
        except OSError as exc:
            if lease:
                lease.release()
            raise InfrastructureError(f"could not start a worker process: {exc}") from None
        cmd = worker.command
        init: dict[str, Any] = {
            "op": "init",
            "path": cmd.submission_path,
            "module": "submission",
            "functions": list(self.manifest.functions),
            "imports": ["numpy", *lab.worker.imports],
            "threads": lab.worker.threads,
        }
        arrays: list[np.ndarray] = []
        if cmd.seccomp:
            arrays.append(np.frombuffer(cmd.seccomp, dtype=np.uint8))
            init["seccomp_frame"] = 0
        # The limit covers the submission's import; starting Python (and torch, triton when the
        # lab imports them first) gets a fixed allowance on top, named in the message.
        allowance = 30.0 if lab.worker.imports else 5.0
        deadline, cut = self._deadline(lab.import_time_limit_s + allowance)
        try:
            worker.send(init, arrays, deadline)
            reply = worker.receive(deadline)
        except WorkerTimeout:
            self._fail_import(
                worker,
                OVERALL if cut else
                f"importing the submission took longer than {lab.import_time_limit_s:g} s "
                f"(plus {allowance:g} s to start Python{' and ' + ', '.join(lab.worker.imports) if lab.worker.imports else ''})",
            )  # fmt: skip
            return
        except (WorkerDied, WorkerProtocolError):
            self._fail_import(worker, f"the submission's process {worker.exit_description()} while being imported")
            return
        answer = read_reply(reply.header)
        if answer is not None and answer.op == "import_error":
            self.import_traceback = answer.error.traceback if answer.error else ""
            self._fail_import(worker, "importing the submission raised " + format_error(answer.error))
            return
        if answer is None or answer.op != "ready" or answer.functions is None:
            self._fail_import(worker, "the submission's process answered the import with an invalid message")
            return
        self._available = dict(answer.functions)
        self._worker = worker

    def _fail_import(self, worker: WorkerProcess, message: str) -> None:
        worker.kill()
        self._collect_output(worker)
        if self._output and self._output[-1].strip():
            last = self._output[-1].strip().splitlines()[-1]
            message += f" (last output: {last[:200]})"
        self.import_failure = message

    def _collect_output(self, worker: WorkerProcess) -> None:
        tail = worker.output_tail()
        if tail:
            self._output.append(tail)

    def _discard_worker(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._collect_output(self._worker)
            self._worker = None

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._collect_output(self._worker)
            self._worker = None
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def output(self) -> str:
        """What the submission printed, across restarts (sanitised, tail only)."""
        return "".join(self._output)[-4000:]

    # -- calls --------------------------------------------------------------------------------

    def defines(self, function: str) -> bool:
        self.start()
        return self.import_failure is None and self._available.get(function, False)

    def _ready(self, function: str) -> WorkerProcess:
        """The running worker, if ``function`` can be called at all; else SubmissionFault."""
        spec = self.manifest.functions[function]
        self.start()
        if self.import_failure is not None:
            raise SubmissionFault(Status.error, self.import_failure)
        if not self._available.get(function, False):
            raise SubmissionFault(Status.error, f"the submission defines no function {function}{spec.signature}")
        if function in self._timed_out:
            raise SubmissionFault(
                Status.error, f"{function} already ran past its {self._timed_out[function]:g} s limit on an earlier call"
            )
        assert self._worker is not None
        return self._worker

    def _deadline(self, limit: float) -> tuple[float, bool]:
        """When a wait of ``limit`` seconds from now must end, and whether the grading's deadline cut it."""
        own = time.monotonic() + limit
        if self.deadline is not None and self.deadline < own:
            return self.deadline, True
        return own, False

    def _encode(self, function: str, inputs: Mapping[str, Any], arrays: list[np.ndarray]) -> list[dict[str, Any]]:
        spec = self.manifest.functions[function]
        device = self.torch_device if spec.arrays == "torch" else None
        return [encode_input(inputs[name], arrays, device) for name in spec.args]

    def _request(
        self, function: str, header: dict[str, Any], arrays: list[np.ndarray], limit: float
    ) -> tuple[Reply, list[bytes], float]:
        """Send one request, wait for its answer under ``limit``; SubmissionFault on any failure."""
        worker = self._ready(function)
        self._calls += 1
        header = dict(header, id=self._calls, function=function)
        started = time.monotonic()
        deadline, cut = self._deadline(limit)
        try:
            worker.send(header, arrays, deadline)
            reply = worker.receive(deadline)
        except WorkerTimeout:
            self._discard_worker()
            if cut:
                raise SubmissionFault(Status.error, f"{function} was still running: {OVERALL}") from None
            self._timed_out[function] = limit
            raise SubmissionFault(Status.error, f"{function} did not return within {limit:g} s (time limit)") from None
        except WorkerDied:
            how = worker.exit_description()
            self._discard_worker()
            raise SubmissionFault(Status.error, f"the submission's process {how} during {function}") from None
        except WorkerProtocolError as exc:
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function} produced an invalid answer ({exc})") from None
        wall = time.monotonic() - started
        answer = read_reply(reply.header)
        if answer is None:
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function} produced an invalid answer (a malformed message)")
        if answer.op != "result" or answer.id != self._calls:
            # Out of turn: something else in the worker (a forked child, a forged frame) wrote here.
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function}: the submission's process answered out of turn")
        if not answer.ok:
            err = answer.error
            if err is not None and err.type == "NotImplementedError":
                raise SubmissionFault(Status.error, f"{function} is not implemented yet (it raises NotImplementedError)", hint=None)
            raise SubmissionFault(Status.error, f"{function} raised " + format_error(err), err.traceback if err else "")
        return answer, reply.frames, wall

    def call(
        self,
        function: str,
        inputs: Mapping[str, Any],
        dims: Mapping[str, int] | None,
        time_limit_s: float | None = None,
        noop_kernels: bool = False,
    ) -> Outputs:
        """Call ``function`` with the case's inputs (matched by argument name) and validate the outputs.

        ``noop_kernels`` runs it with the submission's own Triton kernels turned into no-ops (ghost replay).
        """
        spec = self.manifest.functions[function]
        arrays: list[np.ndarray] = []
        args = self._encode(function, inputs, arrays)
        header = {
            "op": "call",
            "args": args,
            "outputs": len(spec.returns),
            "sync": spec.arrays == "torch" and bool(self.torch_device and self.torch_device.startswith("cuda")),
            "noop_kernels": noop_kernels,
        }
        answer, frames, wall = self._request(function, header, arrays, time_limit_s or self.manifest.lab.time_limit_s)
        arg_dtypes = {name: dtype_name(inputs[name]) for name in spec.args}
        return decode_outputs(function, spec, answer, frames, dims, wall, arg_dtypes)

    def time(
        self, function: str, input_sets: Sequence[Mapping[str, Any]], time_limit_s: float, warmup: int = 3, budget_s: float = 3.0
    ) -> tuple[list[float], list[list[float]], float]:
        """Time ``function`` on one input set per call with the worker's GPU harness.

        Returns per-call device times (us), a fingerprint of each timed output, and the wall time
        of the whole request on the grader's own clock."""
        arrays: list[np.ndarray] = []
        sets = [self._encode(function, inputs, arrays) for inputs in input_sets]
        header = {"op": "time", "input_sets": sets, "warmup": warmup, "budget_s": budget_s}
        answer, _, wall = self._request(function, header, arrays, time_limit_s)
        times, prints = answer.times_us, answer.fingerprints
        if times is None or prints is None or len(times) != len(prints) or not times:
            raise SubmissionFault(Status.error, f"{function}: the timing harness returned an invalid answer")
        return times, prints, wall

    def profile(self, function: str, inputs: Mapping[str, Any], time_limit_s: float) -> tuple[list[dict[str, Any]], list[str]]:
        """The kernel table of a few profiled calls, and the names of the submission's own kernels."""
        arrays: list[np.ndarray] = []
        header = {"op": "profile", "input_sets": [self._encode(function, inputs, arrays)]}
        answer, _, _ = self._request(function, header, arrays, time_limit_s)
        if answer.kernels is None or answer.defined is None:
            raise SubmissionFault(Status.error, f"{function}: the profiler returned an invalid answer")
        return [row.model_dump() for row in answer.kernels], list(answer.defined)


@functools.lru_cache(maxsize=1)
def _sweep_stale_copies() -> None:
    """Remove the private copies that killed graders left behind (their pid is in the name)."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{COPY_PREFIX}*-*"):
        pid = folder.name[len(COPY_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive, or another user's


def _safe_name(filename: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(filename).name)
    return stem if stem.endswith(".py") and not stem.startswith(".") else "submission.py"
