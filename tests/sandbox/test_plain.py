"""Plain values: the strict, bounded JSON that carries strings, lists and dicts across the
boundary and reads a lab's JSON files. Hostile text is refused with a reason, never half-read."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from grader.manifest import OutputSpec
from grader.results import Status
from grader.sandbox.boot import plain
from grader.sandbox.values import SubmissionFault, validate_output

LIMITS = plain.Limits(max_bytes=10_000, max_depth=4, max_items=100, max_string=50)


def test_plain_values_round_trip() -> None:
    value = {"rows": [{"name": "k", "dur": 1.5, "op": None, "ops": ["aten::mm"], "n": 3, "ok": True}], "é": "ü"}
    assert plain.loads(plain.dumps(value), LIMITS) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"[NaN]", "holds NaN"),
        (b"[-Infinity]", "holds -Infinity"),
        (b"[1e999]", "overflows to infinity"),
        (b'{"a": 1, "a": 2}', "repeats the key 'a'"),
        (b"[" * 5 + b"]" * 5, "nests deeper than 4"),
        (b"[" * 100_00 + b"]" * 100_00, "over the limit"),
        (b"[" + b"1," * 200 + b"1]", "more than 100 values"),
        (json.dumps(["x" * 51]).encode(), "a string of 51 characters"),
        (json.dumps({"k" * 51: 1}).encode(), "a key of 51 characters"),
        (b"[" + b"9" * 1001 + b"]", "an integer of 1001 digits"),
        (b"\xff\xfe[]", "not UTF-8"),
        (b"[1, 2", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1] [2]", "not valid JSON"),
    ],
)
def test_hostile_text_is_refused_with_a_reason(text: bytes, reason: str) -> None:
    with pytest.raises(plain.PlainError, match=reason.replace("(", r"\(")):
        plain.loads(text, LIMITS)


def test_deep_nesting_past_the_interpreter_stack_is_a_refusal_not_a_crash() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(plain.PlainError, match="nests deeper"):
        plain.loads(deep, plain.Limits(max_bytes=1 << 20))


def test_nan_is_a_value_where_the_limits_allow_it() -> None:
    got = plain.loads(b"[NaN, Infinity, 1e999]", plain.Limits(allow_nan=True))
    assert math.isnan(got[0]) and got[1] == math.inf and got[2] == math.inf


def test_lone_surrogates_become_replacement_characters() -> None:
    got = plain.loads(b'{"\\ud800": "a\\udfffb"}', LIMITS)
    assert got == {"\ufffd": "a\ufffdb"}
    json.dumps(got).encode("utf-8")


def test_dumps_turns_numpy_numbers_and_tuples_into_plain_ones() -> None:
    text = plain.dumps({"a": np.float64(1.5), "b": np.int32(3), "c": (1, 2), "d": np.arange(3), "e": np.bool_(True)})
    assert json.loads(text) == {"a": 1.5, "b": 3, "c": [1, 2], "d": [0, 1, 2], "e": True}


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", [lambda: 0]])
def test_dumps_refuses_what_is_not_plain(value: object) -> None:
    with pytest.raises(TypeError, match="not a plain value|not JSON serializable"):
        plain.dumps(value)


def test_read_file_reads_gzip_and_plain_json(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"traceEvents": []}')
    with gzip.open(tmp_path / "b.json.gz", "wt") as fh:
        fh.write('{"traceEvents": [1]}')
    assert plain.read_file(str(tmp_path / "a.json"), LIMITS) == {"traceEvents": []}
    assert plain.read_file(str(tmp_path / "b.json.gz"), LIMITS) == {"traceEvents": [1]}


def test_read_file_bounds_a_gzip_bomb_before_reading_it_all(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.json.gz"
    with gzip.open(bomb, "wb") as fh:
        fh.write(b"[" + b" " * (50 << 20) + b"]")
    assert bomb.stat().st_size < 200_000
    with pytest.raises(plain.PlainError, match="more than 10000 bytes"):
        plain.read_file(str(bomb), LIMITS)


@pytest.mark.parametrize("content", [b"\x1f\x8b\x08\x00garbage", b"\x1f\x8b"])
def test_read_file_refuses_a_broken_gzip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.json.gz"
    path.write_bytes(content)
    with pytest.raises(plain.PlainError, match="cannot be read"):
        plain.read_file(str(path), LIMITS)


def test_read_file_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(plain.PlainError, match="cannot be read .*FileNotFoundError"):
        plain.read_file(str(tmp_path / "none.json"), LIMITS)


@pytest.mark.parametrize(
    ("form", "value", "problem"),
    [
        ("list[str]", ["a", "b"], None),
        ("list[str]", ["a", 3], "x[1] should be a string, got the number 3"),
        ("dict[str, number]", {"a": 1, "b": 2.5}, None),
        ("dict[str, number]", {"a": True}, "x['a'] should be a number, got True"),
        ("dict[str, float]", [1.0], "x should be a dict of numbers, got a list"),
        ("int", 3.0, "x should be an integer, got the number 3.0"),
        ("str | none", None, None),
        ("list[dict[str, any]]", [{"a": [1, {}]}, 3], "x[1] should be a dict of values, got the number 3"),
        ("dict[str, number | dict[str, number]]", {"shares": {"a": 0.5}, "busy": 3}, None),
        ("dict[str, number | dict[str, number]]", {"shares": {"a": "half"}}, "x['shares'] should be a number or a dict"),
    ],
)
def test_forms(form: str, value: object, problem: str | None) -> None:
    found = plain.conforms(value, plain.parse_form(form), "x")
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


@pytest.mark.parametrize("form", ["list", "list[", "dict[int, str]", "tuple[str]", "str str", "list[str]]", ""])
def test_bad_forms_are_refused(form: str) -> None:
    with pytest.raises(plain.PlainError):
        plain.parse_form(form)


SPEC = OutputSpec(name="rows", type="plain", form="list[dict[str, number]]",
                  limits={"max_bytes": 1000, "max_depth": 3, "max_items": 50, "max_string": 20})


def answer(value: object, frames: list[bytes] | None = None) -> object:
    return validate_output(value, frames or [], SPEC, None, "kernel_rows's result")


def framed(payload: bytes) -> object:
    return answer({"t": "plain", "f": 0, "py": "list"}, [payload])


def test_a_plain_answer_is_read_and_shaped() -> None:
    assert framed(b'[{"a": 1}, {"b": 2.5}]') == [{"a": 1}, {"b": 2.5}]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'[{"a": NaN}]', "kernel_rows's result holds NaN"),
        (b'[{"a": "x"}]', "kernel_rows's result[0]['a'] should be a number"),
        (b'{"a": 1}', "kernel_rows's result should be a list of dicts"),
        (b"[[[[1]]]]", "nests deeper than 3"),
        (b"[" + b"{}," * 60 + b"{}]", "more than 50 values"),
        (b'["' + b"x" * 2000 + b'"]', "bytes of JSON, over the limit of 1000"),
        (b'[{"a": 1, "a": 1}]', "repeats the key"),
    ],
)
def test_a_wrong_kind_of_plain_answer_fails_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(SubmissionFault) as info:
        framed(payload)
    assert info.value.status is Status.failed
    assert message in info.value.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"t": "ndarray", "f": 0, "py": "ndarray"}, "should be a plain value (list[dict[str, number]]), got a ndarray"),
        ({"t": "other", "py": "generator"}, "got a generator"),
        ({"t": "unplain", "py": "set", "why": "a set is not a plain value"}, "is not a plain value: a set is not a plain value"),
        ({"t": "json", "v": 3, "py": "int"}, "should be a list of dicts"),
    ],
)
def test_answers_that_are_no_plain_value(value: dict, message: str) -> None:
    with pytest.raises(SubmissionFault) as info:
        answer(value)
    assert info.value.status is Status.failed and message in info.value.message


def test_a_frame_the_worker_never_sent_is_an_error() -> None:
    with pytest.raises(SubmissionFault) as info:
        answer({"t": "plain", "f": 3, "py": "list"}, [b"[]"])
    assert info.value.status is Status.error
