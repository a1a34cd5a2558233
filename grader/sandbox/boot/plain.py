"""Plain values: strings, numbers, lists and dicts, carried as strict, bounded JSON.

What a lab asks for as a *plain* value (a list of dicts, a dict of numbers, a string) crosses
the sandbox as JSON text in a frame of its own, never pickled. :func:`loads` is the one reader
of such text, for answers from a worker and for files a lab reads (a profiler trace, a
student's capture) alike: the size is checked before parsing, the nesting depth, the number of
values and the length of every string after it, NaN and infinities are refused unless allowed,
and a repeated key in an object is an error rather than a silent overwrite. :func:`conforms`
checks a value against a *form* such as ``list[dict[str, any]]``.

This module is bound read-only into the sandbox beside ``worker.py``, so it imports nothing but
the standard library.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any


class PlainError(ValueError):
    """Text that is not a plain value within its limits, or a value not of its form."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one plain value."""

    max_bytes: int = 16 << 20
    """Size of its JSON text (after decompression, for a file)."""
    max_depth: int = 16
    """Nesting of lists and dicts (a list of dicts of numbers is 2)."""
    max_items: int = 1_000_000
    """Values in all, every list item, dict entry and scalar counted once."""
    max_string: int = 100_000
    """Characters of any one string, keys included."""
    allow_nan: bool = False
    """Whether NaN and infinities are values (JSON proper has neither)."""


_MAX_INT_DIGITS = 1000


def _constant(name: str) -> float:
    raise PlainError(f"holds {name}, which is not a JSON number")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise PlainError(f"holds an integer of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PlainError(f"holds {text[:20]}, which overflows to infinity")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise PlainError(f"repeats the key {key[:40]!r} in one object")
            seen.add(key)
    return out


def _valid(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (JSON escapes can carry them) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def _bounded(value: Any, limits: Limits) -> Any:
    """Walk the parsed value without recursion: depth, count and string lengths within limits,
    floats finite unless allowed, every string valid Unicode."""
    items = 0
    root = [value]
    stack: list[tuple[Any, Any, int]] = [(root, 0, 0)]
    while stack:
        parent, key, depth = stack.pop()
        item = parent[key]
        items += 1
        if items > limits.max_items:
            raise PlainError(f"holds more than {limits.max_items} values")
        if isinstance(item, str):
            if len(item) > limits.max_string:
                raise PlainError(f"holds a string of {len(item)} characters (at most {limits.max_string})")
            parent[key] = _valid(item)
        elif isinstance(item, float):
            if not limits.allow_nan and not math.isfinite(item):
                raise PlainError("holds NaN or an infinity")
        elif isinstance(item, (list, dict)):
            if depth + 1 > limits.max_depth:
                raise PlainError(f"nests deeper than {limits.max_depth} levels")
            if isinstance(item, list):
                stack.extend((item, i, depth + 1) for i in range(len(item)))
            else:
                for k in list(item):
                    if len(k) > limits.max_string:
                        raise PlainError(f"holds a key of {len(k)} characters (at most {limits.max_string})")
                    good = _valid(k)
                    if good != k:
                        item[good] = item.pop(k)
                    stack.append((item, good, depth + 1))
    return root[0]


def loads(data: bytes | bytearray | memoryview | str, limits: Limits | None) -> Any:
    """The plain value ``data`` holds (UTF-8 JSON), or PlainError saying what broke a limit.
    ``limits`` None is for the grader's own values on their way to a worker: parsed as sent."""
    if limits is None:
        return json.loads(data if isinstance(data, str) else bytes(data).decode("utf-8"))
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > limits.max_bytes:
        raise PlainError(f"is {size} bytes of JSON, over the limit of {limits.max_bytes}")
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PlainError(f"is not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            parse_constant=(lambda name: float(name)) if limits.allow_nan else _constant,
            parse_float=float if limits.allow_nan else _finite_float,
            parse_int=_parse_int,
            object_pairs_hook=_unique_keys,
        )
    except PlainError:
        raise
    except RecursionError:
        raise PlainError(f"nests deeper than {limits.max_depth} levels") from None
    except ValueError as exc:  # json.JSONDecodeError included
        raise PlainError(f"is not valid JSON ({str(exc)[:100]})") from None
    return _bounded(value, limits)


def _plain_default(value: Any) -> Any:
    """numpy scalars and arrays as the Python numbers and lists they hold (students mix them in)."""
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} is not a plain value (use str, int, float, bool, None, list, dict)")


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (tuples become lists; numpy scalars their numbers).
    NaN is written as NaN: whether it is allowed is for the reader's limits to say."""
    return json.dumps(value, default=_plain_default, ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )


def read_file(path: str, limits: Limits) -> Any:
    """A JSON file (gzipped or not, told by its first bytes) as a plain value within ``limits``;
    the decompressed size is bounded before it is all read, so a small bomb stays small."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            stream: Any = gzip.GzipFile(fileobj=fh) if head == b"\x1f\x8b" else fh
            data = stream.read(limits.max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise PlainError(f"cannot be read ({exc.__class__.__name__}: {exc})") from None
    if len(data) > limits.max_bytes:
        raise PlainError(f"holds more than {limits.max_bytes} bytes of JSON")
    return loads(data, limits)


# --- forms ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*([A-Za-z_]+|\[|\]|,|\|)")
SCALARS = ("any", "str", "int", "float", "number", "bool", "none")


def parse_form(text: str) -> Any:
    """A form such as ``list[dict[str, float | int]]`` as a nested tuple, or PlainError.

    Forms: any, str, int, float (an int is accepted too), number, bool, none, list[FORM],
    dict[str, FORM], and alternatives FORM | FORM."""
    tokens = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise PlainError(f"form {text!r}: unexpected {text[pos:pos + 10]!r}")
        tokens.append(match.group(1))
        pos = match.end()

    def alternatives(i: int) -> tuple[Any, int]:
        options = []
        while True:
            form, i = single(i)
            options.append(form)
            if i < len(tokens) and tokens[i] == "|":
                i += 1
                continue
            return (options[0] if len(options) == 1 else ("|", tuple(options))), i

    def expect(i: int, token: str) -> int:
        if i >= len(tokens) or tokens[i] != token:
            raise PlainError(f"form {text!r}: expected {token!r}")
        return i + 1

    def single(i: int) -> tuple[Any, int]:
        if i >= len(tokens):
            raise PlainError(f"form {text!r} ends too early")
        word = tokens[i]
        if word in SCALARS:
            return word, i + 1
        if word == "list":
            inner, i = alternatives(expect(i + 1, "["))
            return ("list", inner), expect(i, "]")
        if word == "dict":
            i = expect(expect(i + 1, "["), "str")
            inner, i = alternatives(expect(i, ","))
            return ("dict", inner), expect(i, "]")
        raise PlainError(f"form {text!r}: unknown {word!r} (forms: {', '.join(SCALARS)}, list[...], dict[str, ...])")

    form, end = alternatives(0)
    if end != len(tokens):
        raise PlainError(f"form {text!r}: unexpected {tokens[end]!r}")
    return form


_ONE = {"any": "any value", "str": "a string", "int": "an integer", "float": "a number", "number": "a number",
        "bool": "true or false", "none": "None", "list": "a list", "dict": "a dict"}
_MANY = {"any": "values", "str": "strings", "int": "integers", "float": "numbers", "number": "numbers",
         "bool": "booleans", "none": "Nones", "list": "lists", "dict": "dicts"}


def _wanted(form: Any, many: bool = False) -> str:
    """A form in words: 'a list of dicts', 'a dict of numbers or dicts'."""
    if isinstance(form, str):
        return (_MANY if many else _ONE)[form]
    if form[0] == "|":
        return " or ".join(_wanted(f, many) for f in form[1])
    if many:
        return _MANY[form[0]]
    return f"{_ONE[form[0]]} of {_wanted(form[1], True)}"


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"{value}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return f"the string {value[:30]!r}"
    return {list: "a list", dict: "a dict"}.get(type(value), type(value).__name__)


def _matches_scalar(value: Any, form: str) -> bool:
    if form == "any":
        return True
    if form == "none":
        return value is None
    if form == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if form == "int":
        return isinstance(value, int)
    if form in ("float", "number"):
        return isinstance(value, (int, float))
    return form == "str" and isinstance(value, str)


def conforms(value: Any, form: Any, where: str = "") -> str | None:
    """None when ``value`` has ``form`` (parsed by :func:`parse_form`), else where and how it
    differs, e.g. ``[3]['dur'] should be a number, got the string '1.5'``."""
    stack = [(value, form, where)]
    while stack:
        item, shape, at = stack.pop()
        if isinstance(shape, str):
            if not _matches_scalar(item, shape):
                return f"{at or 'it'} should be {_wanted(shape)}, got {_describe(item)}"
        elif shape[0] == "|":
            if not any(conforms(item, option, at) is None for option in shape[1]):
                return f"{at or 'it'} should be {_wanted(shape)}, got {_describe(item)}"
        elif shape[0] == "list":
            if not isinstance(item, list):
                return f"{at or 'it'} should be {_wanted(shape)}, got {_describe(item)}"
            stack.extend((v, shape[1], f"{at}[{i}]") for i, v in reversed(list(enumerate(item))))
        else:
            if not isinstance(item, dict):
                return f"{at or 'it'} should be {_wanted(shape)}, got {_describe(item)}"
            stack.extend((v, shape[1], f"{at}[{k[:40]!r}]") for k, v in reversed(list(item.items())))
    return None
