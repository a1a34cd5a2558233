"""Values crossing the boundary, on the grader's side: arguments encoded for the worker, answers
decoded and validated against the manifest before any checker sees them.

Every answer is checked for kind, dtype, shape and finite values; a wrong kind of answer is a
:class:`SubmissionFault` with the status it earns (``failed`` for a wrong answer, ``error`` for
a broken rule or an unusable message).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from grader import dims as dimexpr
from grader.errors import InfrastructureError
from grader.manifest import FunctionSpec, OutputSpec
from grader.recipes import Recipe
from grader.results import Status
from grader.sandbox.boot import plain, wire
from grader.tensors import bit_pattern, is_tensor
from grader.text import printable

MAX_MESSAGE_BYTES = 1 << 30


def _clip(limit: int) -> AfterValidator:
    """Keep the start (a message says what happened first)."""
    return AfterValidator(lambda text: printable(text[:limit]))


def _clip_tail(limit: int) -> AfterValidator:
    """Keep the end (a traceback's last lines are the ones that matter)."""
    return AfterValidator(lambda text: printable(text[-limit:]))


Text = Annotated[str, _clip(500)]
LongText = Annotated[str, _clip_tail(4000)]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ErrorInfo(_Answer):
    """How the submission raised, as the worker describes it (display text only)."""

    type: Annotated[str, _clip(100)] = "an exception"
    message: Text = ""
    where: Annotated[str, _clip(100)] = ""
    traceback: LongText = ""


class KernelRow(_Answer):
    name: Annotated[str, _clip(300)]
    device_time_us: float
    calls: StrictInt


class CodeRow(_Answer):
    kernel: Annotated[str, _clip(100)]
    ptx_mma: list[Annotated[str, _clip(100)]] = Field(default_factory=list, max_length=32)
    sass_mma: list[Annotated[str, _clip(100)]] = Field(default_factory=list, max_length=32)
    sass: StrictBool = False


class Reply(_Answer):
    """One answer from the worker, every field typed and bounded. Which fields are present depends
    on ``op``; what the values mean is decided here on the grader's side, never in the worker."""

    op: str
    id: StrictInt | None = None
    ok: StrictBool = False
    error: ErrorInfo | None = None
    functions: dict[str, StrictBool] | None = Field(default=None, max_length=256)
    tuple: StrictBool = False
    py: Annotated[str, _clip(100)] = ""
    values: list[dict[str, Any]] | None = Field(default=None, max_length=16)
    times_us: list[float] | None = Field(default=None, max_length=10000)
    fingerprints: list[list[float]] | None = Field(default=None, max_length=10000)
    kernels: list[KernelRow] | None = Field(default=None, max_length=200)
    defined: list[Annotated[str, _clip(100)]] | None = Field(default=None, max_length=100)
    changed: list[StrictInt] | None = Field(default=None, max_length=64)
    """The arguments (by position) the call changed in place, as the worker saw it."""
    code: list[CodeRow] | None = Field(default=None, max_length=100)


def read_reply(header: dict[str, Any]) -> Reply | None:
    """The worker's header as a :class:`Reply`, or None when it is not one (the caller says how)."""
    try:
        return Reply.model_validate(header)
    except (ValidationError, RecursionError):
        return None


class SubmissionFault(Exception):
    """The submission did not produce an acceptable answer; ``status`` is what the check gets."""

    def __init__(self, status: Status, message: str, traceback: str = "", hint: str | None = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.traceback = traceback
        """The submission's own traceback, when it raised (display text from the worker)."""
        self.hint = hint
        """What to look at: "" none (the message says it: a crash, a hang), None the check's own hint."""


@dataclass
class Outputs:
    """Validated outputs of one call, by output name, plus the grader-side wall time. Arrays are
    numpy arrays; plain outputs are the Python values (str, int, float, bool, None, list, dict)."""

    values: dict[str, Any]
    wall_s: float = 0.0

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def encode_input(value: Any, arrays: list[np.ndarray | bytes], torch_device: str | None) -> dict[str, Any]:
    """The wire spec of one argument; arrays are appended to ``arrays`` and referred to by index."""
    if isinstance(value, Recipe):
        return {"t": "recipe", "recipe": value.spec, "device": torch_device or "cpu"}
    if is_tensor(value):
        t = value.detach().cpu()
        spec: dict[str, Any] = {"t": "tensor", "device": torch_device or "cpu"}
        if not t.is_contiguous():
            # The same view of a buffer of its own: the span of storage it covers travels, gaps
            # included (a lab may fill them with poison), and the worker re-applies the strides.
            import torch

            span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
            spec["view"] = {"shape": list(t.shape), "strides": list(t.stride())}
            t = torch.as_strided(t, (span,), (1,), t.storage_offset()).clone()
        carried = bit_pattern(t)
        if carried is not None:
            array, spec["dtype"] = carried
        else:
            array = t.contiguous().numpy()
        arrays.append(array)
        spec["f"] = len(arrays) - 1
        return spec
    if isinstance(value, np.ndarray):
        arrays.append(np.ascontiguousarray(value))
        spec = {"t": "tensor" if torch_device else "ndarray", "f": len(arrays) - 1}
        if torch_device:
            spec["device"] = torch_device
        return spec
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 1000):
        return {"t": "json", "v": value}
    if isinstance(value, (str, list, tuple, dict)):
        # A plain value (a profiler trace as json.load gives it, a list of rows) rides in a frame
        # of its own: the header stays small whatever its size.
        try:
            arrays.append(plain.dumps(value))
        except (TypeError, ValueError) as exc:
            raise InfrastructureError(f"cannot send a plain argument to the worker: {exc}") from None
        return {"t": "plain", "f": len(arrays) - 1}
    raise InfrastructureError(f"cannot send an argument of type {type(value).__name__} to the worker")


def _category_ok(dtype_name: str, np_dtype: np.dtype, want: str, arg_dtypes: Mapping[str, str | None]) -> bool:
    if want.startswith("like:"):
        return dtype_name == arg_dtypes.get(want[5:])
    if want == "int":
        return np.issubdtype(np_dtype, np.integer) and dtype_name not in wire.BIT_DTYPES
    if want == "float":
        return dtype_name in wire.BIT_DTYPES or np.issubdtype(np_dtype, np.floating)
    if want == "bool":
        return np_dtype == np.bool_
    if want == "number":
        return dtype_name in wire.BIT_DTYPES or np.issubdtype(np_dtype, np.number)
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
    py = printable(str(value.get("py", "?"))[:80], keep_newlines=False)
    refused = value.get("refused_dtype")
    if isinstance(refused, str):
        return f"an array of dtype {printable(refused[:40], keep_newlines=False)}, which is not a plain integer, float or bool type"
    return {"list": "a list", "tuple": "a tuple", "NoneType": "None", "dict": "a dict"}.get(py, f"a {py}")


def validate_output(
    value: dict[str, Any],
    frames: list[bytes],
    spec: OutputSpec,
    dims: Mapping[str, int] | None,
    label: str,
    arg_dtypes: Mapping[str, str | None] | None = None,
) -> np.ndarray:
    """One output as a plain numpy array (bfloat16 and float8 widened to float32), a plain Python
    value for a ``plain`` output, or SubmissionFault(failed)."""
    kind = value.get("t")
    if spec.type == "plain":
        return validate_plain(value, frames, spec, label)
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
            raise SubmissionFault(Status.failed, f"{label} is a subclass ({_describe_py(value)}); return a plain {expected}")
        array = _frame(frames, value["f"])
        dtype_name = array.dtype.name
        carried = value.get("dtype")
        if carried is not None:
            if carried not in wire.BIT_DTYPES or array.dtype != wire.BIT_DTYPES[carried]:
                raise SubmissionFault(Status.error, f"{label}: malformed {printable(str(carried)[:40], keep_newlines=False)} payload")
            array, dtype_name = wire.widen_bits(array, carried), carried
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


def validate_plain(value: dict[str, Any], frames: list[bytes], spec: OutputSpec, label: str) -> Any:
    """A plain output: its JSON frame read strictly within the spec's limits, then its form."""
    kind = value.get("t")
    if kind == "json" and (value.get("v") is None or isinstance(value.get("v"), (bool, int, float, str))):
        got = value["v"]
        if isinstance(got, float) and not spec.plain_limits.allow_nan and not math.isfinite(got):
            raise SubmissionFault(Status.failed, f"{label} is {got}; NaN never passes")
        if isinstance(got, str) and len(got) > spec.plain_limits.max_string:
            raise SubmissionFault(Status.failed, f"{label} is a string of {len(got)} characters (at most {spec.plain_limits.max_string})")
    elif kind == "plain" and isinstance(value.get("f"), int):
        if not 0 <= value["f"] < len(frames):
            raise SubmissionFault(Status.error, "the worker referred to a value it did not send")
        try:
            got = plain.loads(frames[value["f"]], spec.plain_limits)
        except plain.PlainError as exc:
            raise SubmissionFault(Status.failed, f"{label} {exc}") from None
    elif kind == "unplain":
        why = printable(str(value.get("why", ""))[:200], keep_newlines=False)
        raise SubmissionFault(Status.failed, f"{label} is not a plain value: {why}")
    else:
        raise SubmissionFault(Status.failed, f"{label} should be a plain value ({spec.form or 'any'}), got {_describe_py(value)}")
    problem = plain.conforms(got, spec.plain_form, label)
    if problem:
        raise SubmissionFault(Status.failed, problem)
    return got


def _frame(frames: list[bytes], index: int) -> np.ndarray:
    if not 0 <= index < len(frames):
        raise SubmissionFault(Status.error, "the worker referred to an array it did not send")
    try:
        return wire.parse_npy(frames[index], MAX_MESSAGE_BYTES)
    except wire.WireError as exc:
        raise SubmissionFault(Status.error, f"the worker sent an invalid array ({exc})") from None


def decode_outputs(
    function: str,
    spec: FunctionSpec,
    reply: Reply,
    frames: list[bytes],
    dims: Mapping[str, int] | None,
    wall: float,
    arg_dtypes: Mapping[str, str | None],
) -> Outputs:
    """The validated outputs of one call, or SubmissionFault."""
    values = reply.values
    n = len(spec.returns)
    if not values:
        raise SubmissionFault(Status.error, f"{function} produced an invalid answer")
    if n > 1 and (not reply.tuple or len(values) != n):
        what = f"a {reply.py or '?'}" if not reply.tuple else f"{len(values)} values"
        raise SubmissionFault(Status.failed, f"{function} should return a tuple of {n} values, got {what}")
    out: dict[str, Any] = {}
    for i, ospec in enumerate(spec.returns):
        label = f"{function}'s {ospec.name}" if n > 1 else f"{function}'s result"
        out[ospec.name] = validate_output(values[i], frames, ospec, dims, label, arg_dtypes)
    return Outputs(out, wall)


def format_error(err: ErrorInfo | None) -> str:
    err = err or ErrorInfo()
    text = f"{err.type}: {' '.join(err.message.split())}" if err.message.strip() else err.type
    return text + (f" ({err.where})" if err.where else "")
