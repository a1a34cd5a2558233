"""Text from submissions made safe to show: printable characters only, bounded length."""

from __future__ import annotations


def printable(text: str, limit: int | None = None, keep_newlines: bool = True) -> str:
    """No escape sequences, carriage returns, bells or other control characters; the tail kept."""
    keep = "\n\t" if keep_newlines else "\t"
    out = "".join(ch if ch in keep or (ch.isprintable() and ch != "\x7f") else "?" for ch in text)
    return out if limit is None else out[-limit:]
