"""The wire format between the grader and a submission's worker.

A message is a run of frames, each an 8-byte little-endian length and its payload. The first
frame is a JSON header; it names how many array frames follow. Arrays travel as ``.npy``
bytes and are read back by :func:`parse_npy`, a strict loader: a whitelist of dtypes, no
pickle, and the header checked against the payload's length before anything is allocated.

This module is bound read-only into the sandbox next to ``worker.py``, so it imports nothing
but the standard library and numpy.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
from typing import Any

import numpy as np

LENGTH = 8
MAX_HEADER = 1 << 16
MAX_DEPTH = 32
"""Deepest nesting of lists and objects a header may have (ours use four)."""
NPY_MAGIC = b"\x93NUMPY"
# Plain numeric and boolean dtypes only: no objects, structures, strings, datetimes or complex.
ALLOWED_DESCR = frozenset(
    ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"]
)
# The same values in the other byte order: a lossless difference of layout, read and swapped.
SWAPPED_DESCR = frozenset(">" + d[1:] for d in ALLOWED_DESCR if d[0] == "<")
MAX_NDIM = 8
MAX_DIM = 1 << 40


class WireError(ValueError):
    """Bytes that do not form a valid frame, header or array."""


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH, "little") + payload


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode(header: dict[str, Any], arrays: list[np.ndarray | bytes]) -> bytes:
    """One message: the JSON header, then each array as an .npy frame (bytes, a plain value's
    JSON text, as they are)."""
    header = dict(header, frames=len(arrays))
    parts = [frame(json.dumps(header, allow_nan=True).encode())]
    parts += [frame(a if isinstance(a, bytes) else npy_bytes(a)) for a in arrays]
    return b"".join(parts)


def _depth_ok(text: str, limit: int) -> bool:
    """Whether the JSON text nests lists and objects at most ``limit`` deep (brackets inside
    strings are skipped), checked before parsing so a hostile header cannot exhaust the stack."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def valid_text(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (which JSON's escapes can carry) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {valid_text(k): _clean(v) for k, v in value.items()}
    return value


def parse_header(payload: bytes) -> dict[str, Any]:
    """A header as a JSON object, or WireError: bounded in size and depth, every string valid Unicode."""
    if len(payload) > MAX_HEADER:
        raise WireError(f"header of {len(payload)} bytes is over {MAX_HEADER}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("header is not UTF-8") from None
    if not _depth_ok(text, MAX_DEPTH):
        raise WireError(f"header nests deeper than {MAX_DEPTH} levels")
    try:
        header = _clean(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"header is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(header, dict) or type(header.get("frames", 0)) is not int:
        raise WireError("header is not a JSON object with an integer 'frames'")
    if not 0 <= header.get("frames", 0) <= 64:
        raise WireError("header announces an impossible number of frames")
    return header


def parse_npy(payload: bytes | bytearray | memoryview, max_bytes: int) -> np.ndarray:
    """A plain, owned ndarray from .npy bytes, or WireError; never unpickles, never over-allocates."""
    view = memoryview(payload)
    if bytes(view[:6]) != NPY_MAGIC or len(view) < 10:
        raise WireError("array frame lacks the .npy magic")
    major = view[6]
    if major == 1:
        hlen, start = int.from_bytes(view[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(view[8:12], "little"), 12
    else:
        raise WireError(f"unknown .npy version {major}")
    if hlen > 4096 or start + hlen > len(view):
        raise WireError("array header is too long or truncated")
    try:
        meta = ast.literal_eval(bytes(view[start : start + hlen]).decode("latin1"))
    except Exception:  # literal_eval raises many kinds on hostile text
        raise WireError("array header is not a literal") from None
    if not isinstance(meta, dict) or set(meta) != {"descr", "fortran_order", "shape"}:
        raise WireError("array header has unexpected keys")
    descr, fortran, shape = meta["descr"], meta["fortran_order"], meta["shape"]
    if not isinstance(descr, str) or descr not in ALLOWED_DESCR | SWAPPED_DESCR:
        raise WireError(f"dtype {descr!r} is not allowed")
    if not isinstance(fortran, bool):
        raise WireError("fortran_order is not a boolean")
    if (
        not isinstance(shape, tuple)
        or len(shape) > MAX_NDIM
        or not all(type(n) is int and 0 <= n <= MAX_DIM for n in shape)
    ):
        raise WireError(f"shape {str(shape)[:80]} is not a tuple of at most {MAX_NDIM} sizes up to {MAX_DIM}")
    dtype = np.dtype(descr)
    nbytes = math.prod(shape) * dtype.itemsize
    data = view[start + hlen :]
    if nbytes > max_bytes:
        raise WireError(f"array of {nbytes} bytes is over the limit of {max_bytes}")
    if len(data) != nbytes:
        raise WireError(f"array header promises {nbytes} bytes, the frame holds {len(data)}")
    try:
        arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    except ValueError as exc:  # sizes numpy itself refuses, even for an empty array
        raise WireError(f"array of shape {shape} cannot be made ({exc})") from None
    # Native byte order and C layout: how the bytes were laid out is not part of the answer.
    return np.array(arr, dtype=dtype.newbyteorder("<"), order="C", copy=True)


def digest(array: np.ndarray) -> str:
    """A content hash of an array, the same on both sides of the boundary."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


# Floating dtypes numpy lacks, carried as their bit patterns in an unsigned integer array of the
# same width and widened exactly to float32 on the grader's side. e4m3fn: the FP8 of block-scaled
# GEMMs (4 exponent bits, bias 7, 3 mantissa bits, no infinity; 0x7F and 0xFF are NaN).
BIT_DTYPES = {"bfloat16": np.dtype(np.uint16), "float8_e4m3fn": np.dtype(np.uint8)}


def _e4m3fn_table() -> np.ndarray:
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent, mantissa = (codes >> 3) & 0xF, codes & 0x7
    magnitude = np.where(exponent == 0, mantissa / 8.0 * 2.0**-6, (1 + mantissa / 8.0) * 2.0 ** (exponent - 7.0))
    return np.where((codes & 0x7F) == 0x7F, np.nan, sign * magnitude).astype(np.float32)


E4M3FN = _e4m3fn_table()
"""float32 value of each e4m3fn code, by code."""


def widen_bits(bits: np.ndarray, dtype: str) -> np.ndarray:
    """Values of a :data:`BIT_DTYPES` dtype carried as bit patterns, widened exactly to float32."""
    if dtype == "bfloat16":
        return bf16_to_f32(bits)
    if dtype == "float8_e4m3fn":
        return E4M3FN[bits.astype(np.uint8)]
    raise ValueError(f"no bit-pattern dtype {dtype!r}")


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values carried as their uint16 bit patterns, widened exactly to float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bit patterns, rounding to nearest even (as torch does)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)
