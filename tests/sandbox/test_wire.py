"""The wire format: a strict loader that never unpickles and never allocates from a forged header."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from grader.sandbox.boot import wire


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def forged(descr: str, shape: tuple, payload: bytes, fortran: bool = False) -> bytes:
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    return wire.NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header + payload


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint16", "bool", "int8"])
def test_round_trip(dtype: str) -> None:
    a = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    b = wire.parse_npy(npy(a), 1 << 20)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
    assert b.flags.writeable and b.flags.owndata is not None


UNPICKLED = []


class Tripwire:
    def __setstate__(self, state: object) -> None:  # pragma: no cover - must never run
        UNPICKLED.append(state)


def test_object_arrays_are_refused_without_unpickling() -> None:
    trip = Tripwire()
    trip.payload = 1
    data = npy(np.array([trip], dtype=object), allow_pickle=True)
    with pytest.raises(wire.WireError, match="not allowed"):
        wire.parse_npy(data, 1 << 20)
    assert not UNPICKLED


@pytest.mark.parametrize("descr", ["|O", "<c16", "|S4", "<U3", "<M8[s]", "|V8", "[('a', '<f8')]"])
def test_dtype_whitelist(descr: str) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_npy(forged(descr, (1,), b"\0" * 16), 1 << 20)


def test_forged_huge_shape_is_refused_before_allocating() -> None:
    with pytest.raises(wire.WireError, match="over the limit"):
        wire.parse_npy(forged("<f8", (2**40,), b"\0" * 64), 1 << 30)


def test_header_must_match_payload_length() -> None:
    with pytest.raises(wire.WireError, match="promises 32 bytes"):
        wire.parse_npy(forged("<f8", (4,), b"\0" * 31), 1 << 20)


@pytest.mark.parametrize(
    "payload",
    [b"", b"NOTNUMPY" + b"\0" * 20, wire.NPY_MAGIC + b"\x09\x00" + b"\0" * 20],
)
def test_garbage_is_refused(payload: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_npy(payload, 1 << 20)


def test_header_that_is_not_a_literal_is_refused() -> None:
    header = b"__import__('os').system('echo pwned')" + b" " * 20 + b"\n"
    data = wire.NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header
    with pytest.raises(wire.WireError, match="not a literal"):
        wire.parse_npy(data, 1 << 20)


def test_negative_or_float_shapes_are_refused() -> None:
    for shape in [(-1,), (2.0,), (True,), "3"]:
        with pytest.raises(wire.WireError):
            wire.parse_npy(forged("<f8", shape, b""), 1 << 20)  # type: ignore[arg-type]


def test_fortran_order_is_read_correctly() -> None:
    a = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    assert np.array_equal(wire.parse_npy(npy(a), 1 << 20), a)


def test_message_encoding_and_header_limits() -> None:
    msg = wire.encode({"op": "x"}, [np.zeros(3)])
    n = int.from_bytes(msg[:8], "little")
    header = wire.parse_header(msg[8 : 8 + n])
    assert header == {"op": "x", "frames": 1}
    with pytest.raises(wire.WireError):
        wire.parse_header(b"[1, 2]")
    with pytest.raises(wire.WireError):
        wire.parse_header(json.dumps({"frames": 10**6}).encode())
    with pytest.raises(wire.WireError):
        wire.parse_header(b"\xff\xfe")


def test_bfloat16_bits_round_trip_exactly() -> None:
    values = np.array([1.0, -2.5, 3.140625, 0.0, 65280.0], dtype=np.float32)
    assert np.array_equal(wire.bf16_to_f32(wire.f32_to_bf16(values)), values)


def test_digest_depends_on_content_dtype_and_shape() -> None:
    a = np.zeros(4)
    assert wire.digest(a) == wire.digest(a.copy())
    assert wire.digest(a) != wire.digest(a.astype(np.float32))
    assert wire.digest(a) != wire.digest(a.reshape(2, 2))
    b = a.copy()
    b[0] = 1
    assert wire.digest(a) != wire.digest(b)


def test_a_header_nested_past_the_limit_is_refused_before_parsing() -> None:
    deep = b"[" * 30000 + b"]" * 30000
    with pytest.raises(wire.WireError, match="deeper"):
        wire.parse_header(b'{"frames": 0, "x": ' + deep + b"}")
    brackets_in_a_string = json.dumps({"frames": 0, "text": "[" * 1000}).encode()
    assert wire.parse_header(brackets_in_a_string)["text"] == "[" * 1000


def test_strings_that_are_not_valid_unicode_are_made_valid_at_the_boundary() -> None:
    header = wire.parse_header(json.dumps({"frames": 0, "bad\udcff": ["x\ud800y"]}).encode())
    assert header == {"frames": 0, "bad\ufffd": ["x\ufffdy"]}
    json.dumps(header).encode("utf-8")  # anything downstream can encode it


def test_big_endian_arrays_are_read_in_native_order() -> None:
    a = np.arange(6, dtype=">f8").reshape(2, 3)
    got = wire.parse_npy(npy(a), 1 << 20)
    assert got.dtype == np.dtype("<f8") and np.array_equal(got, a)


@pytest.mark.parametrize("shape", [(0, 10**30), (0, 1 << 40, 1 << 40), (-1,), (1.5,), (True,)])
def test_impossible_shapes_are_refused(shape: tuple) -> None:
    import io

    buf = io.BytesIO()
    buf.write(b"\x93NUMPY\x01\x00")
    text = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode("latin1")
    buf.write(len(text).to_bytes(2, "little") + text)
    with pytest.raises(wire.WireError):
        wire.parse_npy(buf.getvalue(), 1 << 20)


def test_replies_are_typed_and_bounded() -> None:
    from grader.sandbox.values import format_error, read_reply

    assert read_reply({"op": "result", "id": 1, "ok": False, "error": "not an object"}) is None
    assert read_reply({"op": "result", "id": "1", "ok": True}) is None
    reply = read_reply({"op": "result", "id": 1, "ok": False, "error": {"type": "E" * 5000, "message": "m\x1b[2J"}})
    assert reply is not None and len(reply.error.type) == 100
    assert "\x1b" not in format_error(reply.error)
