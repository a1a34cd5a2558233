"""Comparing a submission's arrays with the reference's: tolerances, NaN, and readable mismatches."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grader.manifest import Tolerance
from grader.results import Mismatch

MAX_MISMATCHES = 5


@dataclass
class Comparison:
    ok: bool
    message: str = ""
    mismatches: list[Mismatch] = field(default_factory=list)


def _fmt(value: object, other: object = None) -> str:
    if isinstance(value, (float, np.floating)):
        return digits_apart(float(value), other if isinstance(other, (int, float, np.number)) else None, 6)
    return str(value.item() if isinstance(value, np.generic) else value)


def digits_apart(value: float, other: float | None, digits: int = 4) -> str:
    """``value`` with at least ``digits`` significant digits, and as many more as it takes to
    tell it from ``other`` (so a message never reads "adds up to 1, expected 1")."""
    text = f"{value:.{digits}g}"
    if other is None or value == other:
        return text
    other = float(other)
    for n in range(digits, 18):
        text = f"{value:.{n}g}"
        if text != f"{other:.{n}g}":
            return text
    return repr(value)


def _mismatch(name: str, idx: tuple[int, ...], expected: np.ndarray, got: np.ndarray) -> Mismatch:
    """One element where they differ, each value with the digits that tell it from the other."""
    e, g = expected[idx], got[idx]
    return Mismatch(where=_index(name, idx), expected=_fmt(e, g), got=_fmt(g, e))


def _index(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(str(int(i)) for i in idx)}]" if idx else name


def compare(name: str, expected: np.ndarray, got: np.ndarray, tol: Tolerance) -> Comparison:
    """Elementwise |got - expected| <= atol + rtol*|expected|; NaN and infinity never pass."""
    if expected.shape != got.shape:
        return Comparison(False, f"{name} has shape {got.shape}, expected {expected.shape}")
    if tol.norm is not None:
        return _compare_aggregate(name, expected, got, "norm", tol.norm)
    if tol.calc_diff is not None:
        return _compare_aggregate(name, expected, got, "calc_diff", tol.calc_diff)
    exact = tol.rtol == 0 and tol.atol == 0
    if exact or not (np.issubdtype(expected.dtype, np.floating) or np.issubdtype(got.dtype, np.floating)):
        bad = expected != got
        rule = "exactly"
    else:
        e = expected.astype(np.float64)
        g = got.astype(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(g - e) <= tol.atol + tol.rtol * np.abs(e)) | ~np.isfinite(g)
        rule = f"within rtol={tol.rtol:g}, atol={tol.atol:g}"
    nbad = int(np.count_nonzero(bad))
    if not nbad:
        return Comparison(True)
    where = np.argwhere(bad)[:MAX_MISMATCHES]
    mismatches = [_mismatch(name, tuple(int(j) for j in i), expected, got) for i in where]
    first = mismatches[0]
    kind = str(got.dtype) if got.dtype == expected.dtype else f"{got.dtype} where the reference is {expected.dtype}"
    message = (
        f"{name}: {nbad} of {expected.size} {kind} value(s) differ from the reference ({rule}); "
        f"first at {first.where}: expected {first.expected}, got {first.got}"
    )
    return Comparison(False, message, mismatches)


def calc_diff(expected: np.ndarray, got: np.ndarray) -> float:
    """DeepGEMM's similarity metric: 1 - 2<x, y> / (||x||^2 + ||y||^2); 0 when equal, 1 when orthogonal
    (two all-zero arrays count as equal)."""
    e = expected.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel()
    denom = float(e @ e + g @ g)
    return 0.0 if denom == 0 else 1.0 - 2.0 * float(e @ g) / denom


def _relative_error(e: np.ndarray, g: np.ndarray) -> float:
    return float(np.linalg.norm(g - e) / max(np.linalg.norm(e), 1e-30))


AGGREGATES = {
    "norm": (_relative_error, "relative error", "||got - expected|| / ||expected||"),
    "calc_diff": (calc_diff, "calc_diff", "1 - 2<got, expected> / (||got||^2 + ||expected||^2)"),
}


def _compare_aggregate(name: str, expected: np.ndarray, got: np.ndarray, rule: str, bound: float) -> Comparison:
    """One number over the whole array (a relative norm, calc_diff) against its bound."""
    metric, label, formula = AGGREGATES[rule]
    e = expected.astype(np.float64)
    g = got.astype(np.float64)
    finite = np.isfinite(g)
    if not finite.all():
        bad = np.argwhere(~finite)[:MAX_MISMATCHES]
        mismatches = [_mismatch(name, tuple(int(j) for j in i), e, g) for i in bad]
        return Comparison(False, f"{name}: {int((~finite).sum())} NaN or infinite {got.dtype} value(s); NaN never passes", mismatches)
    value = metric(e, g)
    if value <= bound:
        return Comparison(True)
    err = np.abs(g - e)
    worst = np.argsort(err, axis=None)[::-1][:MAX_MISMATCHES]
    where = [np.unravel_index(i, err.shape) for i in worst]
    mismatches = [_mismatch(name, tuple(int(j) for j in i), e, g) for i in where]
    first = mismatches[0] if mismatches else None
    detail = f"; largest at {first.where}: expected {first.expected}, got {first.got}" if first else ""
    return Comparison(
        False, f"{name}: {label} {value:.3g} of its {got.dtype} values exceeds {bound:g} ({formula}){detail}", mismatches
    )  # fmt: skip


def sort_rows(key: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Reorder every row of ``key`` and of each array by ``key``'s values (for order-free rows)."""
    order = np.argsort(key, axis=-1, kind="stable")
    return [np.take_along_axis(key, order, axis=-1)] + [
        np.take_along_axis(a, order, axis=-1) if a.shape == key.shape else a for a in arrays
    ]
