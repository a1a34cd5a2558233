"""A submission as the checkers see it: functions to call across the process boundary.

The submission is copied into a private folder and imported by a worker in the sandbox; the
grader never imports it. Each call sends fresh copies of the inputs, waits under a deadline,
and validates what comes back against the manifest (type, dtype, shape, finite values, inputs
left unmodified, no aliasing) before any checker sees it. Anything wrong ends as a
:class:`SubmissionFault` carrying the status it earns: ``error`` for raising, hanging, crashing
or breaking a rule, ``failed`` for a wrong kind of answer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader import dims as dimexpr
from grader.errors import InfrastructureError, UsageError
from grader.manifest import FunctionSpec, LabManifest, OutputSpec
from grader.recipes import Recipe
from grader.results import Status
from grader.sandbox.boot import wire
from grader.sandbox.launchers import Launcher, Limits, WorkerCommand, worker_env
from grader.text import printable
from grader.sandbox.uids import UidLease
from grader.sandbox.process import WorkerDied, WorkerProcess, WorkerProtocolError, WorkerTimeout

MAX_SUBMISSION_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 1 << 30
MAX_RESTARTS = 8


class SubmissionFault(Exception):
    """The submission did not produce an acceptable answer; ``status`` is what the check gets."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Outputs:
    """Validated outputs of one call, by output name, plus the grader-side wall time."""

    values: dict[str, np.ndarray]
    wall_s: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


def read_submission(path: Path) -> bytes:
    """The submission's bytes; a one-line UsageError for anything that is not a small regular file."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{path}: is a symbolic link; submit the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: is not a regular file")
    if st.st_size > MAX_SUBMISSION_BYTES:
        raise UsageError(f"{path}: is {st.st_size} bytes, over the {MAX_SUBMISSION_BYTES}-byte limit")
    if path.suffix != ".py":
        raise UsageError(f"{path}: is not a Python file (.py)")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- encoding inputs ---------------------------------------------------------------------------


def is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def encode_input(value: Any, arrays: list[np.ndarray], torch_device: str | None) -> tuple[dict[str, Any], str | None]:
    """The wire spec of one argument and the digest of what was sent (None for scalars and recipes)."""
    if isinstance(value, Recipe):
        return {"t": "recipe", "recipe": value.spec, "device": torch_device or "cpu"}, None
    if is_tensor(value):
        t = value.detach().cpu()
        spec: dict[str, Any] = {"t": "tensor", "device": torch_device or "cpu"}
        if str(t.dtype) == "torch.bfloat16":
            import torch

            array = t.contiguous().view(torch.int16).numpy().view(np.uint16)
            spec["dtype"] = "bfloat16"
        else:
            array = t.contiguous().numpy()
        arrays.append(array)
        spec["f"] = len(arrays) - 1
        return spec, wire.digest(array)
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        arrays.append(array)
        t = "tensor" if torch_device else "ndarray"
        spec = {"t": t, "f": len(arrays) - 1}
        if torch_device:
            spec["device"] = torch_device
        return spec, wire.digest(array)
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"t": "json", "v": value}, None
    raise InfrastructureError(f"cannot send an argument of type {type(value).__name__} to the worker")


# --- decoding and validating outputs -------------------------------------------------------------


def _category_ok(dtype_name: str, np_dtype: np.dtype, want: str, arg_dtypes: Mapping[str, str | None]) -> bool:
    if want.startswith("like:"):
        return dtype_name == arg_dtypes.get(want[5:])
    if want == "int":
        return np.issubdtype(np_dtype, np.integer) and dtype_name != "bfloat16"
    if want == "float":
        return dtype_name == "bfloat16" or np.issubdtype(np_dtype, np.floating)
    if want == "bool":
        return np_dtype == np.bool_
    if want == "number":
        return dtype_name == "bfloat16" or np.issubdtype(np_dtype, np.number)
    return dtype_name == want


def dtype_name(value: Any) -> str | None:
    """The dtype of an input, as outputs name theirs ('float32', 'bfloat16', ...)."""
    if isinstance(value, Recipe):
        return value.dtype
    if is_tensor(value):
        return str(value.dtype).removeprefix("torch.")
    if isinstance(value, np.ndarray):
        return value.dtype.name
    return None


def _describe_py(value: dict[str, Any]) -> str:
    py = str(value.get("py", "?"))
    return {"list": "a list", "tuple": "a tuple", "NoneType": "None", "dict": "a dict"}.get(py, f"a {py}")


def validate_output(
    value: dict[str, Any],
    frames: list[bytes],
    spec: OutputSpec,
    dims: Mapping[str, int] | None,
    label: str,
    arg_dtypes: Mapping[str, str | None] | None = None,
) -> np.ndarray:
    """One output as a plain numpy array (bfloat16 widened to float32), or SubmissionFault(failed)."""
    kind = value.get("t")
    if spec.type == "scalar":
        if kind == "json" and isinstance(value.get("v"), (bool, int, float)):
            array = np.asarray(value["v"])
            dtype_name = array.dtype.name
        elif kind in ("ndarray", "tensor") and isinstance(value.get("f"), int):
            array = _frame(frames, value["f"])
            dtype_name = array.dtype.name
            if array.ndim != 0 and array.shape != (1,):
                raise SubmissionFault(Status.failed, f"{label} should be a single number, got an array of shape {array.shape}")
            array = array.reshape(())
        else:
            raise SubmissionFault(Status.failed, f"{label} should be a number, got {_describe_py(value)}")
    else:
        expected = "numpy array" if spec.type == "ndarray" else "torch tensor"
        if kind != ("ndarray" if spec.type == "ndarray" else "tensor") or not isinstance(value.get("f"), int):
            raise SubmissionFault(Status.failed, f"{label} should be a {expected}, got {_describe_py(value)}")
        if value.get("exact") is False:
            raise SubmissionFault(Status.failed, f"{label} is a subclass ({value.get('py')}); return a plain {expected}")
        array = _frame(frames, value["f"])
        dtype_name = array.dtype.name
        if value.get("dtype") == "bfloat16":
            if array.dtype != np.uint16:
                raise SubmissionFault(Status.error, f"{label}: malformed bfloat16 payload")
            array, dtype_name = wire.bf16_to_f32(array), "bfloat16"
    arg_dtypes = arg_dtypes or {}
    if not _category_ok(dtype_name, array.dtype, spec.dtype, arg_dtypes):
        want = spec.dtype if not spec.dtype.startswith("like:") else f"{arg_dtypes.get(spec.dtype[5:])} (like {spec.dtype[5:]})"
        raise SubmissionFault(Status.failed, f"{label} has dtype {dtype_name}, expected {want}")
    if spec.shape is not None and dims is not None:
        try:
            want = tuple(dimexpr.evaluate(d, dims) for d in spec.shape)
        except dimexpr.DimError as exc:
            raise InfrastructureError(f"the lab's shape for {label} cannot be evaluated: {exc} (the case gives {dict(dims)})") from None
        if array.shape != want:
            raise SubmissionFault(Status.failed, f"{label} has shape {array.shape}, expected {want}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise SubmissionFault(Status.failed, f"{label} holds {bad} NaN or infinite value(s); NaN never passes")
    return array


def _frame(frames: list[bytes], index: int) -> np.ndarray:
    if not 0 <= index < len(frames):
        raise SubmissionFault(Status.error, "the worker referred to an array it did not send")
    try:
        return wire.parse_npy(frames[index], MAX_MESSAGE_BYTES)
    except wire.WireError as exc:
        raise SubmissionFault(Status.error, f"the worker sent an invalid array ({exc})") from None


# --- the submission handle ---------------------------------------------------------------------


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
    ) -> None:
        self.manifest = manifest
        self.launcher = launcher
        self.slot = slot
        self.torch_device = torch_device
        self.filename = filename
        self.source = source
        self._dir = Path(tempfile.mkdtemp(prefix="grader-sub-"))
        os.chmod(self._dir, 0o755)
        self._path = self._dir / _safe_name(filename)
        self._path.write_bytes(source)
        os.chmod(self._path, 0o644)
        self._worker: WorkerProcess | None = None
        self._available: dict[str, bool] = {}
        self.import_failure: str | None = None
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
        deadline = time.monotonic() + lab.import_time_limit_s + allowance
        try:
            worker.send(init, arrays, deadline)
            reply = worker.receive(deadline)
        except WorkerTimeout:
            self._fail_import(
                worker,
                f"importing the submission took longer than {lab.import_time_limit_s:g} s "
                f"(plus {allowance:g} s to start Python{' and ' + ', '.join(lab.worker.imports) if lab.worker.imports else ''})",
            )
            return
        except (WorkerDied, WorkerProtocolError):
            self._fail_import(worker, f"the submission's process {worker.exit_description()} while being imported")
            return
        op = reply.header.get("op")
        if op == "import_error":
            err = reply.header.get("error") or {}
            self._fail_import(worker, "importing the submission raised " + _format_error(err))
            return
        if op != "ready" or not isinstance(reply.header.get("functions"), dict):
            self._fail_import(worker, "the submission's process answered the import with an invalid message")
            return
        self._available = {k: bool(v) for k, v in reply.header["functions"].items()}
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

    def _encode(self, function: str, inputs: Mapping[str, Any], arrays: list[np.ndarray]) -> tuple[list[Any], list[str | None]]:
        spec = self.manifest.functions[function]
        device = self.torch_device if spec.arrays == "torch" else None
        encoded = [encode_input(inputs[name], arrays, device) for name in spec.args]
        return [e[0] for e in encoded], [e[1] for e in encoded]

    def _request(self, function: str, header: dict[str, Any], arrays: list[np.ndarray], limit: float) -> tuple[Any, float]:
        """Send one request, wait for its answer under ``limit``; SubmissionFault on any failure."""
        worker = self._ready(function)
        self._calls += 1
        header = dict(header, id=self._calls, function=function)
        started = time.monotonic()
        deadline = started + limit
        try:
            worker.send(header, arrays, deadline)
            reply = worker.receive(deadline)
        except WorkerTimeout:
            self._timed_out[function] = limit
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function} did not return within {limit:g} s (time limit)") from None
        except WorkerDied:
            how = worker.exit_description()
            self._discard_worker()
            raise SubmissionFault(Status.error, f"the submission's process {how} during {function}") from None
        except WorkerProtocolError as exc:
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function} produced an invalid answer ({exc})") from None
        wall = time.monotonic() - started
        if reply.header.get("op") != "result" or reply.header.get("id") != self._calls:
            # Out of turn: something else in the worker (a forked child, a forged frame) wrote here.
            self._discard_worker()
            raise SubmissionFault(Status.error, f"{function}: the submission's process answered out of turn")
        if not reply.header.get("ok"):
            err = reply.header.get("error") or {}
            if err.get("type") == "NotImplementedError":
                raise SubmissionFault(Status.error, f"{function} is not implemented yet (it raises NotImplementedError)")
            raise SubmissionFault(Status.error, f"{function} raised " + _format_error(err))
        return reply, wall

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
        args, sent = self._encode(function, inputs, arrays)
        header = {
            "op": "call",
            "args": args,
            "names": list(spec.args),
            "outputs": len(spec.returns),
            "sync": spec.arrays == "torch" and bool(self.torch_device and self.torch_device.startswith("cuda")),
            "noop_kernels": noop_kernels,
        }
        reply, wall = self._request(function, header, arrays, time_limit_s or self.manifest.lab.time_limit_s)
        arg_dtypes = {name: dtype_name(inputs[name]) for name in spec.args}
        return self._decode(function, spec, reply.header, reply.frames, sent, dims, wall, arg_dtypes)

    def time(
        self, function: str, input_sets: Sequence[Mapping[str, Any]], time_limit_s: float, warmup: int = 3, budget_s: float = 3.0
    ) -> tuple[list[float], list[list[float]], float]:
        """Time ``function`` on one input set per call with the worker's GPU harness.

        Returns per-call device times (us), a fingerprint of each timed output, and the wall time
        of the whole request on the grader's own clock."""
        arrays: list[np.ndarray] = []
        sets = [self._encode(function, inputs, arrays)[0] for inputs in input_sets]
        header = {"op": "time", "input_sets": sets, "warmup": warmup, "budget_s": budget_s}
        reply, wall = self._request(function, header, arrays, time_limit_s)
        times, prints = reply.header.get("times_us"), reply.header.get("fingerprints")
        if not isinstance(times, list) or not isinstance(prints, list) or len(times) != len(prints) or not times:
            raise SubmissionFault(Status.error, f"{function}: the timing harness returned an invalid answer")
        try:
            return [float(t) for t in times], [[float(v) for v in p] for p in prints], wall
        except (TypeError, ValueError):
            raise SubmissionFault(Status.error, f"{function}: the timing harness returned an invalid answer") from None

    def profile(self, function: str, inputs: Mapping[str, Any], time_limit_s: float) -> tuple[list[dict[str, Any]], list[str]]:
        """The kernel table of a few profiled calls, and the names of the submission's own kernels."""
        arrays: list[np.ndarray] = []
        header = {"op": "profile", "input_sets": [self._encode(function, inputs, arrays)[0]]}
        reply, _ = self._request(function, header, arrays, time_limit_s)
        rows, defined = reply.header.get("kernels"), reply.header.get("defined")
        if not isinstance(rows, list) or not isinstance(defined, list):
            raise SubmissionFault(Status.error, f"{function}: the profiler returned an invalid answer")
        clean = []
        for row in rows[:200]:
            try:
                clean.append({"name": printable(str(row["name"]), 300, False), "device_time_us": float(row["device_time_us"]), "calls": int(row["calls"])})
            except (KeyError, TypeError, ValueError):
                raise SubmissionFault(Status.error, f"{function}: the profiler returned an invalid row") from None
        return clean, [printable(str(n), 100, False) for n in defined[:100]]

    def _decode(
        self,
        function: str,
        spec: FunctionSpec,
        header: dict[str, Any],
        frames: list[bytes],
        sent: Sequence[str | None],
        dims: Mapping[str, int] | None,
        wall: float,
        arg_dtypes: Mapping[str, str | None],
    ) -> Outputs:
        got = header.get("inputs")
        if isinstance(got, list) and len(got) == len(sent):
            for name, before, after in zip(spec.args, sent, got):
                if before is not None and after is not None and after != before:
                    raise SubmissionFault(Status.error, f"{function} modified its argument {name!r} in place; inputs must stay unchanged")
        aliased = header.get("aliases")
        if isinstance(aliased, list) and aliased:
            raise SubmissionFault(
                Status.error, f"{function} returned memory shared with its argument {aliased[0]!r}; return a new array"
            )
        values = header.get("values")
        n = len(spec.returns)
        if not isinstance(values, list) or not values:
            raise SubmissionFault(Status.error, f"{function} produced an invalid answer")
        if n > 1 and (not header.get("tuple") or len(values) != n):
            what = f"a {header.get('py', '?')}" if not header.get("tuple") else f"{len(values)} values"
            raise SubmissionFault(Status.failed, f"{function} should return a tuple of {n} values, got {what}")
        out: dict[str, np.ndarray] = {}
        for i, ospec in enumerate(spec.returns):
            value = values[i] if isinstance(values[i], dict) else {}
            label = f"{function}'s {ospec.name}" if n > 1 else f"{function}'s result"
            out[ospec.name] = validate_output(value, frames, ospec, dims, label, arg_dtypes)
        return Outputs(out, wall)


def _format_error(err: dict[str, Any]) -> str:
    kind = printable(str(err.get("type", "an exception"))[:100], keep_newlines=False)
    message = printable(str(err.get("message", ""))[:500], keep_newlines=False)
    where = printable(str(err.get("where", ""))[:100], keep_newlines=False)
    text = f"{kind}: {message}" if message else kind
    return text + (f" ({where})" if where else "")


def _safe_name(filename: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(filename).name)
    return stem if stem.endswith(".py") and not stem.startswith(".") else "submission.py"
