"""histogram.png: the class's score distribution, drawn into a numpy pixel buffer.

matplotlib is not a dependency, so the PNG is written by hand (an RGB buffer, zlib, and the
four chunks a PNG needs); digits come from a 3x5 pixel font.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grader.atomic import write_atomic

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 30, 40, 44
BINS = 10
INK = (40, 40, 40)
BAR = (66, 133, 200)
GRID = (225, 225, 225)
FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", "%": "101001010100101", "n": "000110101101101",
    "=": "000111000111000", " ": "000000000000000",
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011", "D": "110101101101110",
    "E": "111100110100111", "F": "111100110100100", "G": "011100101101011", "H": "101101111101101",
    "I": "111010010010111", "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010", "P": "110101110100100",
    "Q": "010101101110011", "R": "110101110101101", "S": "011100010001110", "T": "111010010010010",
    "U": "101101101101111", "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", "-": "000000111000000", ".": "000000000000010",
    ":": "000010000010000", "(": "001010010010001", ")": "100010010010100", "/": "001001010100100",
    "_": "000000000000111", ",": "000000000010100",
}  # fmt: skip
"""A 3x5 pixel font: digits, capitals and the punctuation the labels use (rows top to bottom)."""
SCALE = 2


def bins(percents: Sequence[float]) -> list[int]:
    """Counts per 10% bin; 100% falls in the last bin."""
    counts = [0] * BINS
    for p in percents:
        counts[min(BINS - 1, max(0, int(p // (100 / BINS))))] += 1
    return counts


def _text(
    img: np.ndarray, x: int, y: int, text: str, color: tuple[int, int, int] = INK, center: bool = False, capitals: bool = True
) -> None:
    """Draw ``text`` with its top-left corner (or top centre) at (x, y), letters as capitals."""
    text = "".join(ch if ch in FONT else " " for ch in (text.upper() if capitals else text))
    width = len(text) * 4 * SCALE - SCALE
    if center:
        x -= width // 2
    for i, ch in enumerate(text):
        glyph = FONT.get(ch, FONT[" "])
        for j, bit in enumerate(glyph):
            if bit == "1":
                r, c = divmod(j, 3)
                y0, x0 = y + r * SCALE, x + (i * 4 + c) * SCALE
                if 0 <= y0 and y0 + SCALE <= img.shape[0] and 0 <= x0 and x0 + SCALE <= img.shape[1]:
                    img[y0 : y0 + SCALE, x0 : x0 + SCALE] = color


def _nice_step(top: int) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if top / step <= 6:
            return step
    return max(1, top // 5)


def _vertical_text(img: np.ndarray, x: int, y: int, text: str) -> None:
    """Draw ``text`` reading upwards, centred on row ``y``, its left edge at column ``x``."""
    strip = np.full((5 * SCALE, len(text) * 4 * SCALE, 3), 255, dtype=np.uint8)
    _text(strip, 0, 0, text)
    turned = np.rot90(strip)
    top = max(0, y - turned.shape[0] // 2)
    img[top : top + turned.shape[0], x : x + turned.shape[1]] = turned[: img.shape[0] - top]


def render(percents: Sequence[float], title: str = "") -> np.ndarray:
    """The histogram as an (H, W, 3) uint8 image, with ``title`` above it and both axes named."""
    img = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    counts = bins(percents)
    step = _nice_step(max(counts) or 1)
    top = max(step, -(-max(counts) // step) * step)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM  # plot area; y1 is the x axis
    height = y1 - y0

    def y_of(value: float) -> int:
        return y1 - int(round(height * value / top))

    for value in range(0, top + 1, step):  # horizontal grid lines and y tick labels
        y = y_of(value)
        img[y, x0:x1] = GRID
        img[y, x0 - 5 : x0] = INK
        label = str(value)
        _text(img, x0 - 8 - len(label) * 4 * SCALE + SCALE, y - 5, label)
    bin_width = (x1 - x0) / BINS
    for i, count in enumerate(counts):
        left = x0 + int(round(i * bin_width)) + 3
        right = x0 + int(round((i + 1) * bin_width)) - 3
        if count:
            img[y_of(count) : y1, left:right] = BAR
            _text(img, (left + right) // 2, y_of(count) - 14, str(count), center=True)
    img[y0:y1 + 1, x0] = INK  # axes
    img[y1, x0:x1] = INK
    for i in range(BINS + 1):  # x ticks every 10%, labels every 20%
        x = min(x1 - 1, x0 + int(round(i * bin_width)))
        img[y1 : y1 + 5, x] = INK
        if i % 2 == 0:
            _text(img, x, y1 + 10, f"{i * 100 // BINS}%", center=True)
    label = f"n={len(percents)}"
    _text(img, x1 - len(label) * 4 * SCALE, 8, label, capitals=False)
    if title:
        _text(img, x0, 8, title[: max(0, (x1 - x0) // (4 * SCALE) - len(label) - 2)])
    _text(img, (x0 + x1) // 2, y1 + 26, "score (percent of the points)", center=True)
    _vertical_text(img, 6, (y0 + y1) // 2, "students")
    return img


def png_bytes(img: np.ndarray) -> bytes:
    """An RGB image as a PNG file."""
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def histogram_png(percents: Sequence[float], title: str = "") -> bytes:
    return png_bytes(render(percents, title))


def write_histogram(path: Path, percents: Sequence[float], title: str = "") -> None:
    write_atomic(path, histogram_png(percents, title))
