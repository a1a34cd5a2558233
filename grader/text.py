"""Text from submissions made safe to show: printable characters only, bounded length."""

from __future__ import annotations


def printable(text: str, limit: int | None = None, keep_newlines: bool = True) -> str:
    """No escape sequences, carriage returns, bells or other control characters; the tail kept."""
    keep = "\n\t" if keep_newlines else "\t"
    out = "".join(ch if ch in keep or (ch.isprintable() and ch != "\x7f") else "?" for ch in text)
    return out if limit is None else out[-limit:]


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),  # before UTF-16's: FF FE starts both
    (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"),
)


def encoding_problem(data: bytes) -> str | None:
    """Why ``data`` is not Python source a student can fix in one step, when it is not UTF-8
    text ("the file is UTF-16 text, not UTF-8: save it as UTF-8"); None when it is UTF-8."""
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    for bom, name in _BOMS:
        if data.startswith(bom):
            return f"the file is {name} text, not UTF-8: save it as UTF-8"
    return "the file is not UTF-8 text: save it as UTF-8"
