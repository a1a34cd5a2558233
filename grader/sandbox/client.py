"""A submission as the checkers see it: functions to call across the process boundary.

The submission is copied into a private folder and imported by a worker in the sandbox; the
grader never imports it. Each call sends fresh copies of the inputs, waits under a deadline,
and hands the answer to :mod:`grader.sandbox.values` for validation. Anything wrong ends as a
:class:`SubmissionFault` carrying the status it earns: ``error`` for raising, hanging, crashing
or breaking a rule, ``failed`` for a wrong kind of answer.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
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
from grader.sandbox import leases, seccomp
from grader.sandbox.cgroups import WorkerCgroup
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
    ErrorInfo,
    Outputs,
    Reply,
    SubmissionFault,
    decode_outputs,
    dtype_name,
    encode_input,
    format_error,
    read_reply,
)
from grader.text import encoding_problem, printable

MAX_RESTARTS = 8
COPY_PREFIX = "grader-copy-"
"""Private copies of submissions: ``<copies_root()>/grader-copy-<random>/``, each locked by its grading."""
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
        helpers: Mapping[str, bytes] | None = None,
    ) -> None:
        """``deadline`` (time.monotonic) ends every call still running then: the grading's overall
        deadline. ``helpers`` (relative path -> source) are the upload's other modules, placed
        beside the submission so it can import them."""
        self.manifest = manifest
        self.deadline = deadline
        self.launcher = launcher
        self.slot = slot
        self.torch_device = torch_device
        self.filename = filename
        self.source = source
        self.helpers: dict[str, bytes] = dict(helpers or {})
        """The upload's other modules (relative path -> source): the submission's code too."""
        self._files: dict[str, str] = {}
        """What the worker must find in the copy before it imports anything: path -> sha256."""
        try:
            self._lease, self._path = self._copy(source, filename, helpers or {})
        except OSError as exc:
            raise InfrastructureError(f"cannot write the private copy of the submission in {copies_root()}: {exc}") from None
        self._dir = self._lease.path
        self._worker: WorkerProcess | None = None
        self._available: dict[str, bool] = {}
        self.import_failure: str | None = None
        self.import_traceback = ""
        self._timed_out: dict[str, float] = {}
        self.restarts = 0
        self._calls = 0
        self._output: list[str] = []
        self._printed = 0
        settings = manifest.lab.worker
        gpu = torch_device is not None and torch_device.startswith("cuda")
        self._limits = launcher.limits(settings.memory_mb, gpu, heavy="torch" in settings.imports)
        self._cells = notebook_cells(source) if filename.endswith(".ipynb") else []
        self._env = worker_env({**settings.env, **(settings.gpu_env if gpu else settings.cpu_env)}, settings.threads)

    def _copy(self, source: bytes, filename: str, helpers: Mapping[str, bytes]) -> tuple[leases.Lease, Path]:
        """The submission (and its helper modules) in a folder this grading holds; the folder and the file."""
        root = copies_root()
        _sweep_stale_copies(root)
        lease = leases.hold(root, COPY_PREFIX)
        try:
            os.chmod(lease.path, 0o755)
            for rel, data in helpers.items():
                target = lease.path / rel
                if ".." in Path(rel).parts or Path(rel).is_absolute():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(target.parent, 0o755)
                target.write_bytes(data)
                os.chmod(target, 0o644)
                self._files[rel] = hashlib.sha256(data).hexdigest()
            name = _safe_name(filename)
            path = lease.path / (name if name not in helpers else f"graded_{name}")
            path.write_bytes(source)
            os.chmod(path, 0o644)
            self._files[path.name] = hashlib.sha256(source).hexdigest()
        except OSError:
            shutil.rmtree(lease.path, ignore_errors=True)
            lease.release()
            raise
        return lease, path

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
        init: dict[str, Any] = {
            "op": "init",
            "module": "submission",
            "functions": list(self.manifest.functions),
            "imports": ["numpy", *lab.worker.imports],
            "threads": lab.worker.threads,
            "files": self._files,
            "poison": lab.worker.poison_uninitialized,
        }
        # The limit covers the submission's import; starting Python (and torch, triton when the
        # lab imports them first) gets a fixed allowance on top, named in the message.
        allowance = 30.0 if lab.worker.imports else 5.0
        deadline, cut = self._deadline(lab.import_time_limit_s + allowance)
        if cut and time.monotonic() >= deadline:
            self.import_failure = OVERALL
            return
        try:
            worker = launch(
                self.launcher, sys.executable, self._path, self._env, self._limits, init, deadline, lab.worker.children_outlive_calls
            )
        except WorkerSetupError as exc:
            if cut and time.monotonic() >= deadline:  # the grading's deadline, not the sandbox, stopped it
                self.import_failure = OVERALL
                return
            raise InfrastructureError(str(exc)) from None
        try:
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
        if answer is not None and answer.op == "setup_error":  # before the submission ran: the installation's problem
            worker.kill()
            raise InfrastructureError(
                f"the worker could not import what the lab needs ({', '.join(init['imports'])}) before the submission: "
                f"{format_error(answer.error)}"
            )
        if answer is not None and answer.op == "import_error":
            error = self._in_cells(answer.error)
            self.import_traceback = error.traceback if error else ""
            self._fail_import(worker, "importing the submission raised " + format_error(error) + self._encoding_note())
            return
        if answer is None or answer.op != "ready" or answer.functions is None:
            self._fail_import(worker, "the submission's process answered the import with an invalid message")
            return
        self._available = dict(answer.functions)
        if not worker.settle():
            self._fail_import(worker, "the submission's processes could not be paused after its import")
            return
        self._worker = worker

    def _in_cells(self, error: ErrorInfo | None) -> ErrorInfo | None:
        """For a notebook, the error's lines as the student's cells number them ("cell 3, line 2"),
        not as the one file its code cells were joined into."""
        cells = self._cells
        if error is None or not cells:
            return error

        def cell_line(match: re.Match[str]) -> str:
            number = int(match[1])
            return f"cell {cells[number - 1][0]}, line {cells[number - 1][1]}" if 0 < number <= len(cells) and cells[number - 1][0] else match[0]

        return error.model_copy(update={key: LINE.sub(cell_line, getattr(error, key)) for key in ("where", "traceback", "message")})

    def _encoding_note(self) -> str:
        """Why a file Python cannot read as source failed, when it is not UTF-8 text."""
        problem = encoding_problem(self.source)
        return f"; {problem}" if problem else ""

    def _fail_import(self, worker: WorkerProcess, message: str) -> None:
        worker.kill()
        self._collect_output(worker)
        if self._output and self._output[-1].strip():
            last = self._output[-1].strip().splitlines()[-1]
            message += f" (last output: {last[:200]})"
        self.import_failure = message

    @property
    def printed(self) -> int:
        """Bytes the submission has printed so far, across its workers (what was kept or not)."""
        return self._printed + (self._worker.output.total if self._worker is not None else 0)

    def _collect_output(self, worker: WorkerProcess) -> None:
        self._printed += worker.output.total
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
        self._lease.release()

    @property
    def output(self) -> str:
        """What the submission printed, across restarts (sanitised, tail only)."""
        return "".join(self._output)[-4000:]

    # -- calls --------------------------------------------------------------------------------

    def check_frozen(self, function: str) -> None:
        """SubmissionFault if the submission's processes ran since the worker last answered (a
        check calls this after timing the baseline: what ran then was the baseline's rival)."""
        if self._worker is None:
            return
        broken = self._worker.tree.ran_while_frozen()
        if broken is not None:
            self._discard_worker()
            raise SubmissionFault(Status.error, _ran_while_frozen(function, broken))

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

    def _encode(self, function: str, inputs: Mapping[str, Any], arrays: list[np.ndarray | bytes]) -> list[dict[str, Any]]:
        spec = self.manifest.functions[function]
        device = self.torch_device if spec.arrays == "torch" else None
        return [encode_input(inputs[name], arrays, device) for name in spec.args]

    def _request(
        self, function: str, header: dict[str, Any], arrays: list[np.ndarray | bytes], limit: float
    ) -> tuple[Reply, list[bytes], float]:
        """Send one request, wait for its answer under ``limit``; SubmissionFault on any failure."""
        worker = self._ready(function)
        self._calls += 1
        header = dict(header, id=self._calls, function=function)
        broken = worker.thaw()
        if broken is not None:
            self._discard_worker()
            raise SubmissionFault(Status.error, _ran_while_frozen(function, broken))
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
        if not worker.settle():
            resumed = worker.tree.resumed
            self._discard_worker()
            if resumed is not None:
                raise SubmissionFault(Status.error, _ran_while_frozen(function, resumed))
            raise SubmissionFault(Status.error, f"{function}: the submission's processes could not be paused after the call")
        answer = read_reply(reply.header)
        if answer is None:
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function} produced an invalid answer (a malformed message)")
        if answer.op != "result" or answer.id != self._calls:
            # Out of turn: something else in the worker (a forked child, a forged frame) wrote here.
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function}: the submission's process answered out of turn")
        if not answer.ok:
            err = self._in_cells(answer.error)
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
        arrays: list[np.ndarray | bytes] = []
        args = self._encode(function, inputs, arrays)
        header = {
            "op": "call",
            "args": args,
            "outputs": len(spec.returns),
            "sync": spec.arrays == "torch" and bool(self.torch_device and self.torch_device.startswith("cuda")),
            "noop_kernels": noop_kernels,
        }
        answer, frames, wall = self._request(function, header, arrays, time_limit_s or self.manifest.lab.time_limit_s)
        changed = [spec.args[i] for i in answer.changed or [] if 0 <= i < len(spec.args)]
        if changed:
            names = " and ".join(repr(name) for name in changed)
            raise SubmissionFault(
                Status.error,
                f"{function} changed its argument{'s' if len(changed) > 1 else ''} {names} in place; the caller's arrays must stay as they were",
                hint="work on copies (x.copy(), t.clone()) or new arrays; a model calling this function would lose its data",
            )
        arg_dtypes = {name: dtype_name(inputs[name]) for name in spec.args}
        return decode_outputs(function, spec, answer, frames, dims, wall, arg_dtypes)

    def time(
        self, function: str, input_sets: Sequence[Mapping[str, Any]], time_limit_s: float, warmup: int = 3, budget_s: float = 3.0
    ) -> tuple[list[float], list[list[float]], float]:
        """Time ``function`` on one input set per call with the worker's GPU harness.

        Returns per-call device times (us), a fingerprint of each timed output, and the wall time
        of the whole request on the grader's own clock."""
        arrays: list[np.ndarray | bytes] = []
        sets = [self._encode(function, inputs, arrays) for inputs in input_sets]
        header = {"op": "time", "input_sets": sets, "warmup": warmup, "budget_s": budget_s}
        answer, _, wall = self._request(function, header, arrays, time_limit_s)
        times, prints = answer.times_us, answer.fingerprints
        if times is None or prints is None or len(times) != len(prints) or not times:
            raise SubmissionFault(Status.error, f"{function}: the timing harness returned an invalid answer")
        return times, prints, wall

    def profile(self, function: str, inputs: Mapping[str, Any], time_limit_s: float) -> tuple[list[dict[str, Any]], list[str]]:
        """The kernel table of a few profiled calls, and the names of the submission's own kernels."""
        arrays: list[np.ndarray | bytes] = []
        header = {"op": "profile", "input_sets": [self._encode(function, inputs, arrays)]}
        answer, _, _ = self._request(function, header, arrays, time_limit_s)
        if answer.kernels is None or answer.defined is None:
            raise SubmissionFault(Status.error, f"{function}: the profiler returned an invalid answer")
        return [row.model_dump() for row in answer.kernels], list(answer.defined)

    def code(self, function: str, inputs: Mapping[str, Any], time_limit_s: float) -> list[dict[str, Any]]:
        """After one call: each compiled kernel of the submission's own Triton kernels, with the
        matrix instructions of its PTX and SASS (what the worker reports, bounded and typed)."""
        arrays: list[np.ndarray] = []
        header = {"op": "code", "input_sets": [self._encode(function, inputs, arrays)]}
        answer, _, _ = self._request(function, header, arrays, time_limit_s)
        if answer.code is None:
            raise SubmissionFault(Status.error, f"{function}: the worker returned no compiled code")
        return [row.model_dump() for row in answer.code]


def copies_root() -> Path:
    """Where private copies go: ``$SLURM_TMPDIR`` where a site gives each job a folder of its own
    there, else the temp folder (``$TMPDIR``)."""
    own = os.environ.get("SLURM_TMPDIR")
    if own and os.path.isdir(own) and os.access(own, os.W_OK | os.X_OK):
        return Path(own)
    return Path(tempfile.gettempdir())


@functools.lru_cache(maxsize=4)
def _sweep_stale_copies(root: Path) -> None:
    """Remove the private copies that no grading holds any more (graders killed mid-grading)."""
    leases.sweep(root, COPY_PREFIX, lambda folder: shutil.rmtree(folder, ignore_errors=True))


def _ran_while_frozen(function: str, how: str) -> str:
    return (
        f"{function}: the submission's processes ran while they were frozen between calls ({how}); "
        "a process that resumes itself (a timer sending SIGCONT) breaks the sandbox's containment"
    )


class WorkerSetupError(Exception):
    """The worker did not come up, or could not confirm its isolation, before any code of the
    student's ran: the grader's problem, never the submission's."""


def launch(
    launcher: Launcher,
    python: str,
    path: Path,
    env: dict[str, str],
    limits: Limits,
    init: dict[str, Any],
    deadline: float,
    keep_children: bool = False,
) -> WorkerProcess:
    """Start a worker for the submission file at ``path`` in ``launcher``'s tier, send it
    ``init`` and wait for its hello: the uid, seccomp filter, Landlock domain and capabilities it
    runs under, reported before it imports the submission. The import's answer is the caller's
    to read. WorkerSetupError if any of that fails or does not match the tier."""
    try:
        lease = UidLease() if launcher.drop_uid else None
    except (RuntimeError, ValueError, OSError) as exc:
        raise WorkerSetupError(f"no worker uid: {exc}") from None
    uid = lease.uid if lease else None
    cgroup = tmp = None
    try:
        if launcher.cgroups.places:
            cgroup = WorkerCgroup(limits.memory_mb << 20 if limits.memory_mb else None, limits.nproc, launcher.cgroups)
        tmp = launcher.private_tmp(uid, limits.budget_mb)

        def build(fds: tuple[int, int]) -> WorkerCommand:
            return launcher.command(python, path, fds, env, limits, uid, cgroup.keeper_args() if cgroup else None, tmp)

        worker = WorkerProcess(build, MAX_MESSAGE_BYTES, lease, cgroup, tmp, keep_children)
    except OSError as exc:
        if lease is not None:
            lease.release()
        if cgroup is not None:
            cgroup.remove()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise WorkerSetupError(f"could not start a worker process: {exc}") from None
    cmd = worker.command
    init = dict(init, path=cmd.submission_path, **limits.worker_init())
    arrays: list[np.ndarray | bytes] = []
    if cmd.seccomp:
        arrays.append(np.frombuffer(cmd.seccomp, dtype=np.uint8))
        init["seccomp_frame"] = 0
    if cmd.landlock:
        init["landlock"] = cmd.landlock
    try:
        worker.send(init, arrays, deadline)
        hello = worker.receive(deadline).header
    except (WorkerTimeout, WorkerDied, WorkerProtocolError) as exc:
        how = "did not start in time" if isinstance(exc, WorkerTimeout) else worker.exit_description()
        worker.kill()
        last = worker.output_tail().strip().splitlines()
        raise WorkerSetupError(f"the worker ({launcher.mode}) {how} before it was ready" + (f": {last[-1][:300]}" if last else "")) from None
    if hello.get("op") == "hello" and hello.get("copy"):
        worker.kill()
        raise WorkerSetupError(
            f"the grader's private copy of the submission is not what the grader wrote ({printable(str(hello['copy']), 300, False)}): "
            "the grader's failure, not the student's; grade it again"
        )
    problems = _unconfirmed(hello, launcher, cmd)
    if problems:
        worker.kill()
        raise WorkerSetupError(f"the worker ({launcher.mode}) could not set up its isolation: {'; '.join(problems)}")
    # The worker waits for this go-ahead before it imports anything: until then it is ours, so
    # a worker that cannot be found, or is gone, is the grader's problem; from then on, what
    # happens to it is the submission's.
    worker.started(int(hello.get("pid", -1)))
    if worker.tree.worker is None:
        worker.kill()
        raise WorkerSetupError(f"the worker ({launcher.mode}) could not be found among its processes")
    try:
        worker.send({"op": "go"}, [], deadline)
    except (WorkerTimeout, WorkerDied) as exc:
        how = "did not read its go-ahead in time" if isinstance(exc, WorkerTimeout) else worker.exit_description()
        worker.kill()
        raise WorkerSetupError(f"the worker ({launcher.mode}) {how} before it was ready") from None
    return worker


def _unconfirmed(hello: dict[str, Any], launcher: Launcher, cmd: WorkerCommand) -> list[str]:
    """What the worker's hello says is not as the tier promised."""
    if hello.get("op") == "setup_error":
        return [printable(str(hello.get("error")), 300, False)]
    if hello.get("op") != "hello":
        return ["it did not say hello"]
    problems = []
    if hello.get("python") != sys.version:
        # e.g. a worker uid that cannot read the interpreter's own libpython picks up the system's
        problems.append(f"it runs Python {str(hello.get('python')).split()[0]}, not this grader's {sys.version.split()[0]}")
    if cmd.uid is not None and hello.get("uid") != cmd.uid:
        problems.append(f"it runs as uid {hello.get('uid')}, not {cmd.uid}")
    if launcher.landlock and hello.get("landlock") != launcher.landlock:
        problems.append("Landlock was not applied")
    if seccomp.supported() and hello.get("seccomp") != 2:
        problems.append("no seccomp filter is installed")
    if hello.get("no_new_privs") != 1:
        problems.append("no_new_privs is not set")
    if hello.get("cap_eff") != 0:
        problems.append("it holds capabilities")
    return problems


def probe_worker(launcher: Launcher, python: str) -> tuple[bool, str]:
    """Whether a worker comes up in ``launcher``'s configuration, isolated as it promises (an
    empty submission, numpy imported), and else the reason in one line."""
    folder = Path(tempfile.mkdtemp(prefix="grader-probe-"))
    os.chmod(folder, 0o755)
    path = folder / "probe.py"
    path.write_text("")
    os.chmod(path, 0o644)
    init = {"op": "init", "module": "probe", "functions": [], "imports": ["numpy"], "threads": 1}
    worker = None
    try:
        deadline = time.monotonic() + 30
        worker = launch(launcher, python, path, worker_env({}, 1), launcher.limits(4096, launcher.gpu), init, deadline)
        reply = worker.receive(deadline)
        if reply.header.get("op") != "ready":
            return False, f"the probe's worker answered {reply.header.get('op')!r}"
        return True, ""
    except WorkerSetupError as exc:
        return False, str(exc)
    except (WorkerTimeout, WorkerDied, WorkerProtocolError):
        return False, "the probe's worker did not finish starting"
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(folder, ignore_errors=True)


LINE = re.compile(r"\bline (\d+)")
CELL_MARK = re.compile(r"^# --- cell (\d+) ---$")


def notebook_cells(source: bytes) -> list[tuple[int, int]]:
    """For each line of a notebook's joined code cells (discovery.notebook_source), its cell's
    number and its line within that cell; (0, 0) for the lines the joining added."""
    out: list[tuple[int, int]] = []
    cell, line = 0, 0
    for text in source.decode("utf-8", errors="replace").splitlines():
        mark = CELL_MARK.match(text)
        if mark:
            cell, line = int(mark[1]), 0
            out.append((0, 0))
            continue
        line += 1
        out.append((cell, line) if cell else (0, 0))
    return out


def _safe_name(filename: str) -> str:
    """A module file name for the submission's private copy (a notebook becomes its stem + .py)."""
    stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in Path(filename).stem)
    return f"{stem}.py" if stem and not stem.startswith((".", "-")) else "submission.py"
