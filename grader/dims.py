"""Dimension expressions such as ``"T*k"`` or ``"E+1"``, used in manifests for shapes and ranges.

Only integer arithmetic on names is allowed; nothing is ever passed to ``eval``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_FUNCS = {"min": min, "max": max}


class DimError(ValueError):
    """An expression that cannot be parsed or names an unknown dimension."""


def parse(expr: str | int) -> ast.expr:
    """Parse ``expr`` and reject anything but names, integers, + - * // %, min and max."""
    if isinstance(expr, int):
        return ast.Constant(expr)
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError as exc:
        raise DimError(f"cannot parse {expr!r}") from exc
    for sub in ast.walk(node):
        ok = isinstance(sub, (ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.USub, ast.Call, *_BINOPS))
        ok = ok or (isinstance(sub, ast.Constant) and type(sub.value) is int)
        if isinstance(sub, ast.Call):
            ok = isinstance(sub.func, ast.Name) and sub.func.id in _FUNCS and not sub.keywords
        if not ok:
            raise DimError(f"{expr!r} may only use names, integers, + - * // %, min() and max()")
    return node


def names(expr: str | int) -> set[str]:
    """The dimension names an expression refers to."""
    return {
        n.id
        for n in ast.walk(parse(expr))
        if isinstance(n, ast.Name) and n.id not in _FUNCS
    }


def evaluate(expr: str | int, dims: Mapping[str, int]) -> int:
    """The integer value of ``expr`` with ``dims`` bound."""

    def ev(node: ast.expr) -> int:
        if isinstance(node, ast.Constant):
            return int(node.value)
        if isinstance(node, ast.Name):
            if node.id not in dims:
                raise DimError(f"unknown dimension {node.id!r}")
            return int(dims[node.id])
        if isinstance(node, ast.UnaryOp):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            return int(_BINOPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return int(_FUNCS[node.func.id](*(ev(a) for a in node.args)))
        raise DimError(f"unsupported expression {ast.dump(node)}")

    return ev(parse(expr))
