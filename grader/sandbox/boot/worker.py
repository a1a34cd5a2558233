"""The submission's side of the boundary: import the submission, then answer calls.

Started by the grader as ``python -I -B worker.py FD_IN FD_OUT`` inside the sandbox. It reads
requests from FD_IN and writes answers to FD_OUT in the format of ``wire.py``. Everything it
sends is treated as untrusted data by the grader: once the submission is imported it may have
patched anything in this process, so nothing here decides a verdict.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.util
import io
import os
import re
import sys
import time
import traceback
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpu  # noqa: E402
import landlock  # noqa: E402
import numpy as np  # noqa: E402
import plain  # noqa: E402
import wire  # noqa: E402

torch: Any = None


class Channel:
    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = os.read(self.fd_in, min(n - got, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def receive(self) -> tuple[dict[str, Any], list[bytes]]:
        header = wire.parse_header(self._read_exact(int.from_bytes(self._read_exact(8), "little")))
        frames = []
        for _ in range(header.get("frames", 0)):
            frames.append(self._read_exact(int.from_bytes(self._read_exact(8), "little")))
        return header, frames

    def send(self, header: dict[str, Any], arrays: list[np.ndarray | bytes]) -> None:
        # What the submission printed reaches the grader's log before the answer does (it may be
        # killed right after answering).
        for stream in (sys.__stdout__, sys.__stderr__, sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - a replaced or closed stream is the submission's business
                pass
        view = memoryview(wire.encode(header, arrays))
        while view:
            view = view[os.write(self.fd_out, view) :]


def apply_seccomp(program: bytes) -> None:
    """Install a seccomp-bpf filter on this process (the fallback tiers; bwrap does it itself)."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(program) // 8, program)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP failed")


def limit_address_space(extra: int) -> None:
    """RLIMIT_AS at what this process has mapped now (the interpreter and the lab's imports) plus
    ``extra`` bytes, soft and hard, before the submission runs. Libraries are mapped whole but
    mostly never touched (a CUDA build of torch maps gigabytes), so the limit is sized from them
    rather than fixed; RLIMIT_DATA, set before the interpreter started, bounds private memory."""
    import resource

    with open("/proc/self/status") as fh:
        size = next(int(line.split()[1]) << 10 for line in fh if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + extra if hard == resource.RLIM_INFINITY else min(hard, size + extra)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def confinement() -> dict[str, Any]:
    """This process's uid, seccomp mode, no_new_privs and effective capabilities, from /proc."""
    out: dict[str, Any] = {"uid": os.getuid(), "pid": os.getpid(), "python": sys.version}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key == "Seccomp":
                    out["seccomp"] = int(value)
                elif key == "NoNewPrivs":
                    out["no_new_privs"] = int(value)
                elif key == "CapEff":
                    out["cap_eff"] = int(value, 16)
    except (OSError, ValueError):
        pass
    return out


def read_copy(path: str, files: dict[str, str]) -> tuple[bytes | None, str | None]:
    """The submission's bytes, once every file of the grader's private copy (beside ``path``) is
    there with the content the grader wrote; else None and what is wrong. Checked before anything
    of the student's runs, so the answer can be trusted: a missing or changed copy is the grader's
    failure (another grader's sweep took it, say), never the student's."""
    source = None
    folder = os.path.dirname(path)
    for rel, digest in files.items():
        try:
            fd = os.open(os.path.join(folder, rel), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            return None, f"{rel}: {exc.strerror or exc}"
        if hashlib.sha256(data).hexdigest() != digest:
            return None, f"{rel}: its content is not what the grader wrote"
        if rel == os.path.basename(path):
            source = data
    return source, None


def _base(filename: object) -> str:
    return os.path.basename(filename) if isinstance(filename, str) and filename else "?"


def describe(exc: BaseException, path: str) -> dict[str, Any]:
    """Exception type, message, the innermost line of the submission it came from, and the
    traceback cut to the submission's own frames (what a student can act on)."""
    frames = [entry for entry in traceback.extract_tb(exc.__traceback__) if entry.filename == path]
    where = f"line {frames[-1].lineno}, in {frames[-1].name}" if frames else ""
    if isinstance(exc, SyntaxError) and exc.lineno:
        # the file and line once, in ``where`` (str() of a SyntaxError repeats them); a helper module by its name
        own_file = exc.filename == path
        where = f"line {exc.lineno}" if own_file else f"{_base(exc.filename)}, line {exc.lineno}"
    if isinstance(exc, SystemExit):
        message = f"called sys.exit({exc.code!r})"
    elif isinstance(exc, SyntaxError) and where:
        message = str(exc.msg)  # str() would add "(file, line N)", which ``where`` says already
    else:
        try:
            message = str(exc.msg) if isinstance(exc, SyntaxError) else str(exc)
        except BaseException:  # noqa: BLE001 - a hostile __str__
            message = "(its message could not be read)"
    own = "".join(traceback.format_list(frames)).replace(path, "your file")
    if isinstance(exc, SyntaxError) and exc.lineno:
        shown = "your file" if exc.filename == path else _base(exc.filename)
        own += f'  File "{shown}", line {exc.lineno}\n    {str(exc.text or "").rstrip()}\n'
    return {
        "type": type(exc).__name__,
        "message": message[:2000],
        "where": where,
        "traceback": ("Traceback (your code only):\n" + own + f"{type(exc).__name__}: {message[:500]}")[-4000:],
    }


def to_input(spec: dict[str, Any], frames: list[bytes]) -> Any:
    if spec["t"] == "json":
        return spec["v"]
    if spec["t"] == "recipe":
        return gpu.materialize(spec["recipe"], spec.get("device", "cpu"))
    if spec["t"] == "plain":
        return plain.loads(frames[spec["f"]], None)
    array = np.load(io.BytesIO(frames[spec["f"]]), allow_pickle=False)
    if spec["t"] == "ndarray":
        return array
    tensor = torch.from_numpy(array)
    if spec.get("dtype") in wire.BIT_DTYPES:
        tensor = tensor.view(getattr(torch, spec["dtype"]))
    tensor = tensor.to(spec.get("device", "cpu"))
    view = spec.get("view")
    if view is not None:  # a strided argument: the same view of a buffer of its own
        tensor = tensor.as_strided(view["shape"], view["strides"])
    return tensor


def unchanged_check(spec: dict[str, Any], frames: list[bytes], value: Any) -> Any:
    """How to tell, after the call, whether the function changed this argument in place: an array
    or tensor that came in a frame is compared with the frame's bytes (nothing to do before the
    call but note its shape and type, so nothing is added to a timed call's own time); one made
    here from a recipe (on the GPU, too big to copy) keeps a fingerprint taken now. None: nothing
    to compare (a number). A strided argument's frame is the storage it spans, gaps included, so
    its content is fingerprinted instead."""
    if spec["t"] in ("ndarray", "tensor") and spec.get("view") is None:
        return ("frame", frames[spec["f"]], _layout(value))
    if spec["t"] in ("recipe", "tensor"):
        return ("fingerprint", fingerprint(value))
    return None


def _layout(value: Any) -> tuple[tuple[int, ...], str]:
    return tuple(value.shape), str(value.dtype)


FINGERPRINT_CHUNK = 1 << 26
"""Elements summed at a time on a GPU: a weight tensor may fill most of its memory, so no sum may
need a widened copy of all of it."""


def fingerprint(value: Any) -> tuple[Any, ...]:
    """The shape, type and content of a tensor or array: exact (a hash of its bytes) on the CPU;
    on a GPU two sums, of its bits as integers and of its values, computed there chunk by chunk."""
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type != "cpu":
            flat = t.contiguous().reshape(-1)
            bits_view = flat.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
            bits, total = 0, 0.0
            for start in range(0, flat.numel(), FINGERPRINT_CHUNK):
                bits += int(bits_view[start : start + FINGERPRINT_CHUNK].sum(dtype=torch.int64))
                total += float(flat[start : start + FINGERPRINT_CHUNK].sum(dtype=torch.float64))
            return (*_layout(t), bits, total)
        value = as_numpy(t)[0]
    return (*_layout(value), hashlib.blake2b(np.ascontiguousarray(value).reshape(-1).view(np.uint8)).digest())


def changed(value: Any, check: Any) -> bool:
    """Whether ``value`` differs from what it was when the call began (see unchanged_check)."""
    if check is None:
        return False
    try:
        if check[0] == "fingerprint":
            return fingerprint(value) != check[1]
        _, frame, layout = check
        if _layout(value) != layout:
            return True
        array = as_numpy(value)[0] if torch is not None and isinstance(value, torch.Tensor) else np.asarray(value)
        data = np.frombuffer(frame, dtype=np.uint8, count=array.nbytes, offset=len(frame) - array.nbytes)
        return not np.array_equal(np.ascontiguousarray(array).reshape(-1).view(np.uint8), data)
    except Exception:  # noqa: BLE001 - an argument the submission turned into something else
        return True


def as_numpy(value: Any) -> tuple[np.ndarray, str | None]:
    """A tensor's host copy as numpy (bfloat16 and float8 as their bit patterns), and its dtype
    if it needs naming."""
    t = value.detach()
    name = str(t.dtype).removeprefix("torch.")
    bits = wire.BIT_DTYPES.get(name)
    if bits is not None:
        same_width = torch.uint8 if bits.itemsize == 1 else torch.int16
        return t.cpu().contiguous().view(same_width).numpy().view(bits), name
    return t.cpu().contiguous().numpy(), None


def encode_value(value: Any, arrays: list[np.ndarray | bytes]) -> dict[str, Any]:
    py = type(value).__name__
    if torch is not None and isinstance(value, torch.Tensor):
        array, named = as_numpy(value)
        arrays.append(array)
        out = {"t": "tensor", "f": len(arrays) - 1, "py": py, "device": str(value.device), "exact": type(value) is torch.Tensor}
        if named:
            out["dtype"] = named
        return out
    if isinstance(value, bool | int | float) and not isinstance(value, np.generic):
        return {"t": "json", "v": value, "py": py}
    if value is None or isinstance(value, str | list | tuple | dict):
        # A plain value goes as JSON text in a frame of its own; the grader reads it strictly.
        try:
            arrays.append(plain.dumps(value))
        except (TypeError, ValueError, RecursionError) as exc:
            return {"t": "unplain", "py": py, "why": str(exc)[:200]}
        return {"t": "plain", "f": len(arrays) - 1, "py": py}
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)  # strips ndarray subclasses
        if array.dtype.str not in wire.ALLOWED_DESCR | wire.SWAPPED_DESCR:
            return {"t": "other", "py": py, "refused_dtype": str(array.dtype)}
        arrays.append(array)
        return {"t": "ndarray", "f": len(arrays) - 1, "py": py, "exact": type(value) in (np.ndarray,) or isinstance(value, np.generic)}
    return {"t": "other", "py": py}


def upload_modules(folder: str) -> dict[str, Any]:
    """The modules loaded from the upload's folder (the submission and the helper modules it
    imported), by name: all of them are the submission's code."""
    out = {}
    for name, module in list(sys.modules.items()):
        try:
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and os.path.realpath(file).startswith(folder + os.sep):
                out[name] = module
        except BaseException:  # noqa: BLE001 - whatever the submission put in sys.modules
            continue
    return out


class NoopKernels:
    """While active, launches of Triton kernels defined in the submission (any of the upload's
    modules) do nothing (ghost replay)."""

    def __init__(self, module_names: set[str]) -> None:
        self.module_names = module_names
        self.saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> None:
        classes = []
        try:
            from triton.runtime.jit import JITFunction

            classes.append(JITFunction)
            from triton.runtime.interpreter import InterpretedFunction

            classes.append(InterpretedFunction)
        except ImportError:
            pass
        for cls in classes:
            original = cls.run

            def run(self: Any, *args: Any, _original: Any = original, _names: set[str] = self.module_names, **kwargs: Any) -> Any:
                if getattr(getattr(self, "fn", None), "__module__", None) in _names:
                    return None
                return _original(self, *args, **kwargs)

            self.saved.append((cls, original))
            cls.run = run

    def __exit__(self, *exc: Any) -> None:
        for cls, original in self.saved:
            cls.run = original


def repair_interpreter() -> None:
    """Mend two faults of Triton's CPU interpreter that a kernel correct on a GPU would be
    charged for; nothing else of the interpreter changes."""
    try:
        import triton.runtime.interpreter as interp
    except ImportError:
        return
    _repair_index(interp)
    _repair_fp8(interp)


def _repair_index(interp: Any) -> None:
    """Triton 3.6's interpreter converts one-element arrays with int(), which NumPy 2.4 and
    later refuse ('only 0-dimensional arrays can be converted to Python scalars'), so every loop
    with a run-time bound fails. Later Triton releases fixed it; on the affected versions the
    worker converts with .item() instead."""
    try:
        int(np.zeros(1))
        return  # this NumPy still converts one-element arrays
    except TypeError:
        pass
    original = getattr(interp, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_grader_repaired", False):
        return

    def patched(tensor: Any, scope: Any) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    patched._grader_repaired = True  # type: ignore[attr-defined]
    interp._patch_lang_tensor = patched


def to_e4m3fn(values: np.ndarray, toward_zero: bool = False) -> np.ndarray:
    """e4m3fn codes of float values as a GPU converts them (cvt.rn.satfinite): round to nearest
    even (or toward zero), finite values beyond +-448 saturate to +-448, NaN stays NaN (0x7F)."""
    v = np.asarray(values, dtype=np.float64)
    nan = np.isnan(v)
    mag = np.where(nan, 0.0, np.minimum(np.abs(v), 448.0))
    _, exponent = np.frexp(mag)  # mag = m * 2**exponent with 0.5 <= m < 1
    lead = np.where(mag > 0, np.maximum(exponent - 1, -6), -6)  # the leading bit's exponent; subnormals share 2**-6's
    scaled = np.ldexp(mag, 3 - lead)  # in units of the spacing 2**(lead - 3): exact
    steps = np.trunc(scaled) if toward_zero else np.rint(scaled)  # rint rounds half to even
    # code = 8 * (biased exponent) + mantissa, the same as 8 * (lead + 6) + steps for every
    # binade: a mantissa rounding up to 16 steps carries into the exponent by itself.
    codes = (8 * (lead + 6) + steps).astype(np.uint8)
    codes |= np.where(np.signbit(v), 0x80, 0).astype(np.uint8)
    return np.where(nan, np.uint8(0x7F), codes).astype(np.uint8)


def _repair_fp8(interp: Any) -> None:
    """The interpreter's float -> float8e4nv conversion rounds half up, drops the carry when the
    mantissa rounds over (1.9 becomes 1.0, not 2.0), truncates subnormals and wraps values past
    448; its float8e4nv -> float conversion reads NaN as 480. The worker converts e4m3fn as a
    GPU does instead (:func:`to_e4m3fn`; widening by the exact table of wire.E4M3FN)."""
    original = getattr(interp, "_convert_float", None)
    tl = getattr(interp, "tl", None)
    if original is None or tl is None or getattr(original, "_grader_repaired", False):
        return
    e4m3 = tl.float8e4nv
    widths = {tl.float32: np.float32, tl.float16: np.float16, tl.float64: np.float64}

    def as_float(data: np.ndarray, dtype: Any) -> np.ndarray | None:
        if dtype == tl.bfloat16:
            return (np.asarray(data).astype(np.uint32) << 16).view(np.float32)
        return np.asarray(data).view(widths[dtype]) if dtype in widths else None

    def convert(input: Any, input_dtype: Any, output_dtype: Any, rounding_mode: Any) -> Any:
        if output_dtype == e4m3 and input_dtype != e4m3:
            values = as_float(input, input_dtype)
            if values is not None:
                toward_zero = rounding_mode is not None and "RTZ" in str(rounding_mode)
                return to_e4m3fn(values, toward_zero).reshape(np.shape(input))
        if input_dtype == e4m3 and output_dtype in (tl.float32, tl.float16, tl.float64, tl.bfloat16):
            wide = wire.E4M3FN[np.asarray(input).view(np.uint8)]
            if output_dtype == tl.bfloat16:  # exact: an e4m3 value has at most 4 significant bits
                return (wide.view(np.uint32) >> 16).astype(np.uint16)
            return wide.astype(widths[output_dtype]).view(getattr(np, f"uint{output_dtype.primitive_bitwidth}"))
        return original(input, input_dtype, output_dtype, rounding_mode)

    convert._grader_repaired = True  # type: ignore[attr-defined]
    interp._convert_float = convert


class PoisonedMemory:
    """While active, memory torch allocates without initialising it (torch.empty and the like)
    reads as NaN, and integers as their largest value: a kernel that reads what it never wrote
    gets poison instead of whatever the allocator happened to hold (often zeros, which hide the
    bug). torch does this in its deterministic mode; non-deterministic ops only warn meanwhile."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and torch is not None
        self.saved: tuple[bool, bool, bool] | None = None

    def __enter__(self) -> None:
        if not self.enabled:
            return
        det = torch.utils.deterministic
        self.saved = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            det.fill_uninitialized_memory,
        )
        warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = True

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            enabled, warn_only, fill = self.saved
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
            torch.utils.deterministic.fill_uninitialized_memory = fill
            self.saved = None


# Matrix instructions in a compiled kernel: PTX (Hopper's wgmma, Ampere-style mma.sync, Blackwell's
# tcgen05.mma) and SASS (xGMMA, xMMA: QGMMA is Hopper's FP8 warpgroup MMA, HGMMA its f16/bf16 one).
PTX_MMA = re.compile(r"\b(?:wgmma\.mma_async|mma\.sync|tcgen05\.mma)[\w.:]*")
SASS_MMA = re.compile(r"\b[A-Z]{1,3}[GM]MA(?:\.\w+)*")


def jit_functions(modules: dict[str, Any]) -> list[Any]:
    """The JIT functions behind the Triton kernels the submission defines in any of its modules
    (autotuned or not), each once."""
    found: dict[int, Any] = {}
    for module_name, module in modules.items():
        for value in list(vars(module).values()):
            fn = value
            while hasattr(fn, "fn") and not hasattr(fn, "device_caches"):
                fn = fn.fn  # an autotuner or heuristics wraps the JIT function
            caches = getattr(fn, "device_caches", None)
            if isinstance(caches, dict) and getattr(getattr(fn, "fn", None), "__module__", None) == module_name:
                found[id(fn)] = fn
    return list(found.values())


def forget_compiled(modules: dict[str, Any]) -> None:
    """Empty the in-memory caches of compiled kernels of the submission's JIT functions, so that
    the next call compiles (from Triton's disk cache) exactly the kernels it launches."""
    for fn in jit_functions(modules):
        fn.device_caches.clear()


def compiled_code(modules: dict[str, Any]) -> list[dict[str, Any]]:
    """Each compiled kernel of the submission's Triton kernels: its name and the distinct matrix
    instructions of its PTX and, where Triton can disassemble it, its SASS."""
    rows = []
    for fn in jit_functions(modules):
        for entry in list(fn.device_caches.values()):
            for table in entry if isinstance(entry, tuple) else (entry,):
                for kernel in list(table.values()) if isinstance(table, dict) else ():
                    asm = getattr(kernel, "asm", None)
                    if asm is None:
                        continue
                    ptx = asm.get("ptx", "")
                    try:
                        sass = asm["sass"]
                    except Exception:  # noqa: BLE001 - no disassembler here: PTX alone
                        sass = ""
                    rows.append({
                        "kernel": fn.fn.__name__,
                        "ptx_mma": sorted(set(PTX_MMA.findall(ptx if isinstance(ptx, str) else "")))[:32],
                        "sass_mma": sorted(set(SASS_MMA.findall(sass if isinstance(sass, str) else "")))[:32],
                        "sass": bool(sass),
                    })  # fmt: skip
    return rows[:100]


def kernel_names(modules: dict[str, Any]) -> list[str]:
    """Names of the Triton kernels the submission defines in any of its modules (JIT functions,
    autotuned or not)."""
    names = []
    for module_name, module in modules.items():
        for value in list(vars(module).values()):
            fn = value
            while hasattr(fn, "fn") and not callable(getattr(fn, "__code__", None)):
                fn = fn.fn
            if fn is not value and getattr(fn, "__module__", None) == module_name:
                names.append(fn.__name__)
    return sorted(set(names))


def main() -> int:
    global torch
    chan = Channel(int(sys.argv[1]), int(sys.argv[2]))
    for fd in (chan.fd_in, chan.fd_out):
        os.set_inheritable(fd, False)
    init, frames = chan.receive()
    # Confine this process before anything of the student's runs, then say how it is confined:
    # the grader checks the hello against the tier and refuses to go on if they differ.
    applied = 0
    try:
        rules = init.get("landlock")
        if rules:
            applied = landlock.restrict(rules["read"], rules["write"], rules["devices"])
        if init.get("seccomp_frame") is not None:
            apply_seccomp(np.load(io.BytesIO(frames[init["seccomp_frame"]]), allow_pickle=False).tobytes())
    except OSError as exc:
        chan.send({"op": "setup_error", "error": f"{exc.strerror or exc} ({exc.__class__.__name__})"}, [])
        return 1
    source, copy = read_copy(init["path"], init.get("files") or {})
    chan.send({"op": "hello", "landlock": applied, "copy": copy, **confinement()}, [])
    if copy is not None:
        return 1
    # Nothing of the student's runs until the grader has found this process among the tree's
    # (a submission that ends itself at once must be this import's failure, not a worker the
    # grader never saw) and says go.
    try:
        go, _ = chan.receive()
    except EOFError:
        return 0
    if go.get("op") != "go":
        return 0
    for name in init.get("imports", []):
        try:
            module = importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - the lab's own imports: the installation's problem
            chan.send({"op": "setup_error", "error": describe(exc, ""), "module": name}, [])
            return 1
        if name == "torch":
            torch = module
            torch.set_num_threads(int(init.get("threads", 2)))
        if name == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
            repair_interpreter()
    if init.get("address_space_extra"):
        limit_address_space(int(init["address_space_extra"]))
    path = init["path"]
    folder = os.path.realpath(os.path.dirname(path))
    sys.path.insert(0, os.path.dirname(path))  # the upload's own helper modules import as they did at home
    try:
        spec = importlib.util.spec_from_file_location(init.get("module", "submission"), path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        if source is None:
            spec.loader.exec_module(module)
        else:  # the bytes checked above, not a second read of the file (running them is this process's job)
            exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)  # noqa: S102
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are the submission's too
        chan.send({"op": "import_error", "error": describe(exc, path)}, [])
        return 0
    functions = {name: callable(getattr(module, name, None)) for name in init.get("functions", [])}
    chan.send({"op": "ready", "functions": functions}, [])

    while True:
        try:
            request, frames = chan.receive()
        except EOFError:
            return 0
        op = request.get("op")
        if op not in ("call", "time", "profile", "code"):
            return 0
        call_id = request.get("id")
        fn = getattr(module, request["function"], None)
        if op in ("time", "profile", "code"):
            try:
                if not callable(fn):
                    raise AttributeError(f"the submission defines no function {request['function']!r}")
                sets = [[to_input(spec, frames) for spec in args] for args in request["input_sets"]]
                if op == "time":
                    times, prints = gpu.time_calls(fn, sets, request.get("warmup", 3), request.get("budget_s", 3.0))
                    reply = {"op": "result", "id": call_id, "ok": True, "times_us": times, "fingerprints": prints}
                elif op == "code":
                    forget_compiled(upload_modules(folder))  # what earlier calls compiled (other shapes, tiles) is not this call's
                    fn(*sets[0])  # compiles every kernel the call launches
                    if torch is not None and torch.cuda.is_available():
                        torch.cuda.synchronize()
                    reply = {"op": "result", "id": call_id, "ok": True, "code": compiled_code(upload_modules(folder))}
                else:
                    rows = gpu.profile_calls(fn, sets[0], request.get("warmup", 2), request.get("active", 3))
                    reply = {"op": "result", "id": call_id, "ok": True, "kernels": rows[:200], "defined": kernel_names(upload_modules(folder))}
            except BaseException as exc:  # noqa: BLE001
                reply = {"op": "result", "id": call_id, "ok": False, "error": describe(exc, path)}
            chan.send(reply, [])
            continue
        args = [to_input(spec, frames) for spec in request["args"]]
        checks = [unchanged_check(spec, frames, arg) for spec, arg in zip(request["args"], args)]
        started = time.perf_counter()
        try:
            if not callable(fn):
                raise AttributeError(f"the submission defines no function {request['function']!r}")
            with PoisonedMemory(bool(init.get("poison"))):
                if request.get("noop_kernels"):
                    with NoopKernels(set(upload_modules(folder))):
                        result = fn(*args)
                else:
                    result = fn(*args)
            if torch is not None and request.get("sync") and torch.cuda.is_available():
                torch.cuda.synchronize()
        except BaseException as exc:  # noqa: BLE001
            chan.send({"op": "result", "id": call_id, "ok": False, "error": describe(exc, path)}, [])
            continue
        elapsed = time.perf_counter() - started
        # Reported for the student's sake: a forger can leave it out, and gains what a correct file has.
        mutated = [i for i, (arg, check) in enumerate(zip(args, checks)) if changed(arg, check)]
        as_tuple = isinstance(result, tuple | list) and request.get("outputs", 1) > 1
        outputs = list(result) if as_tuple else [result]
        arrays: list[np.ndarray | bytes] = []
        try:
            values = [encode_value(v, arrays) for v in outputs[:16]]
            header = {
                "op": "result",
                "id": call_id,
                "ok": True,
                "tuple": as_tuple,
                "py": type(result).__name__,
                "values": values,
                "elapsed_s": elapsed,
                "changed": mutated,
            }
        except BaseException as exc:  # noqa: BLE001 - a hostile __array__ or __len__
            chan.send({"op": "result", "id": call_id, "ok": False, "error": describe(exc, path)}, [])
            continue
        chan.send(header, arrays)


if __name__ == "__main__":
    sys.exit(main())
