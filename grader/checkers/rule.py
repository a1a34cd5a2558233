"""Rule checks: static inspection of the submission's source, in the grader's process.

The submission is parsed, never imported. Two kinds of rule:

* ``whole_operands``: parameters of the function that must not be multiplied *whole* against
  each other in one call (``a @ b``, ``np.matmul(a, b)``, ``np.dot``, ``np.einsum``...): the
  tiling rule of lab-03. Aliases (``A = np.asarray(a)``, ``a.copy()``, ``a[:, :]``) count as
  whole; slices do not.
* ``forbid_calls``: callables the function may not use, by qualified name (``numpy.matmul``,
  ``torch.matmul``) after resolving import aliases; a name starting with ``.`` is a method
  (``.matmul``); ``@`` forbids the matrix-multiplication operator.

Both follow calls into the module's own functions (so a helper does not hide a violation), and
skip functions compiled by Triton (``@triton.jit``), whose ``tl.dot`` is the point. Static
inspection cannot see everything (``eval``, ``getattr`` with computed names); it is one layer,
and the oracle and performance checks are others.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from grader.api import CheckContext, Checker, CheckSpec, LabManifest, Verdict

MATMUL_CALLS = {
    "numpy.matmul", "numpy.dot", "numpy.einsum", "numpy.tensordot", "numpy.inner", "numpy.vdot",
    "numpy.linalg.multi_dot", "torch.matmul", "torch.mm", "torch.einsum", "torch.tensordot",
}  # fmt: skip
MATMUL_METHODS = {"dot", "matmul", "__matmul__", "mm"}
WHOLE_WRAPPERS = {"numpy.asarray", "numpy.array", "numpy.ascontiguousarray", "numpy.asfortranarray", "numpy.copy"}
WHOLE_METHODS = {"copy", "astype", "view", "reshape", "contiguous", "clone", "float", "double"}
JIT_DECORATORS = {"triton.jit", "triton.autotune", "triton.heuristics"}


class RuleOptions(CheckSpec):
    """Static rules on the submission's source."""

    kind: Literal["rule"] = "rule"
    whole_operands: list[str] = Field(
        default_factory=list,
        description="Parameters of `function` that must never be multiplied whole against each other in one call.",
    )
    forbid_calls: list[str] = Field(
        default_factory=list,
        description="Qualified callables the function may not use ('numpy.matmul'); '.name' is a method, '@' the operator.",
    )

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        args = manifest.functions[self.function].args
        out = [
            ("whole_operands", f"parameters of {self.function}: {args}", repr(name))
            for name in self.whole_operands
            if name not in args
        ]
        if not self.whole_operands and not self.forbid_calls:
            out.append(("forbid_calls", "at least one rule (whole_operands or forbid_calls)", "none"))
        return out


@dataclass
class Analysis:
    """The module's parsed source and what a walk of it found."""

    tree: ast.Module
    aliases: dict[str, str] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)


def _aliases(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {"np": "numpy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                out[name.asname or name.name.split(".")[0]] = name.name if name.asname else name.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for name in node.names:
                out[name.asname or name.name] = f"{node.module}.{name.name}"
    return out


def qualified(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``np.linalg.multi_dot`` -> ``numpy.linalg.multi_dot``; ``getattr(np, "dot")`` too."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = qualified(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        base = qualified(node.args[0], aliases)
        return f"{base}.{node.args[1].value}" if base else None
    return None


def _is_jit(fn: ast.FunctionDef, aliases: dict[str, str]) -> bool:
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if (qualified(target, aliases) or "") in JIT_DECORATORS:
            return True
    return False


class _Walker:
    def __init__(self, analysis: Analysis, rules: RuleOptions) -> None:
        self.a = analysis
        self.rules = rules
        self.forbidden = {name for name in rules.forbid_calls if not name.startswith(".") and name != "@"}
        self.methods = {name[1:] for name in rules.forbid_calls if name.startswith(".")}
        self.visited: set[tuple[str, frozenset[str]]] = set()

    def whole(self, node: ast.AST, tainted: set[str]) -> bool:
        if isinstance(node, ast.Name):
            return node.id in tainted
        if isinstance(node, ast.Call):
            name = qualified(node.func, self.a.aliases)
            if name in WHOLE_WRAPPERS and node.args:
                return self.whole(node.args[0], tainted)
            if isinstance(node.func, ast.Attribute) and node.func.attr in WHOLE_METHODS:
                return self.whole(node.func.value, tainted)
        if isinstance(node, ast.Attribute) and node.attr in ("T", "mT"):
            return self.whole(node.value, tainted)
        if isinstance(node, ast.Subscript):
            index = node.slice
            parts = index.elts if isinstance(index, ast.Tuple) else [index]
            full = all(
                (isinstance(p, ast.Slice) and p.lower is None and p.upper is None and p.step is None)
                or (isinstance(p, ast.Constant) and p.value is Ellipsis)
                for p in parts
            )
            return full and self.whole(node.value, tainted)
        return False

    def walk(self, fn: ast.FunctionDef, tainted: set[str], path: str) -> None:
        key = (fn.name, frozenset(tainted))
        if key in self.visited or _is_jit(fn, self.a.aliases):
            return
        self.visited.add(key)
        tainted = set(tainted)
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and self.whole(node.value, tainted):
                tainted.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in ast.walk(fn):
            where = f"{path}, line {getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                if "@" in self.rules.forbid_calls:
                    self.a.violations.append(f"{where}: uses the @ operator")
                if self.whole(node.left, tainted) and self.whole(node.right, tainted):
                    self.a.violations.append(f"{where}: multiplies the whole operands in one step ({ast.unparse(node)})")
            if not isinstance(node, ast.Call):
                continue
            name = qualified(node.func, self.a.aliases)
            if name in self.forbidden:
                self.a.violations.append(f"{where}: calls {name}")
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if method in self.methods and name not in self.forbidden:
                self.a.violations.append(f"{where}: calls the method .{method}()")
            if self.rules.whole_operands:
                operands = list(node.args)
                if method in MATMUL_METHODS and name not in MATMUL_CALLS:
                    operands = [node.func.value, *operands]  # type: ignore[union-attr]
                if (name in MATMUL_CALLS or method in MATMUL_METHODS) and sum(self.whole(o, tainted) for o in operands) >= 2:
                    self.a.violations.append(f"{where}: multiplies the whole operands in one call ({ast.unparse(node)})")
            callee = self.a.functions.get(node.func.id) if isinstance(node.func, ast.Name) else None
            if callee is not None:
                params = [p.arg for p in callee.args.args]
                passed = {params[i] for i, arg in enumerate(node.args[: len(params)]) if self.whole(arg, tainted)}
                passed |= {kw.arg for kw in node.keywords if kw.arg and self.whole(kw.value, tainted)}
                self.walk(callee, passed, f"{path} -> {callee.name}")


def analyse(source: str, rules: RuleOptions) -> list[str]:
    """Violations of ``rules`` in ``source`` (empty when it complies); raises SyntaxError."""
    tree = ast.parse(source)
    analysis = Analysis(tree, _aliases(tree))
    analysis.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    target = analysis.functions.get(rules.function)
    if target is None:
        return []
    walker = _Walker(analysis, rules)
    params = [p.arg for p in target.args.args]
    walker.walk(target, {p for p in params if p in rules.whole_operands}, rules.function)
    return list(dict.fromkeys(analysis.violations))


class RuleChecker(Checker):
    """Reads the submission's source (never imports it) and reports rule violations as errors."""

    name = "rule"
    Options = RuleOptions

    def run(self, check_id: str, check: RuleOptions, ctx: CheckContext) -> Verdict:
        source = ctx.submission.source.decode("utf-8", errors="replace")
        try:
            violations = analyse(source, check)
        except SyntaxError as exc:
            return Verdict.error(f"cannot read the source: SyntaxError at line {exc.lineno}: {exc.msg}")
        if not ctx.submission.defines(check.function):
            return Verdict.error(f"the submission defines no function {check.function}")
        if violations:
            more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
            return Verdict.error(f"breaks the lab's rule: {violations[0]}{more}", details={"violations": len(violations)})
        return Verdict.passed("follows the lab's rules (checked in the source, statically)")
