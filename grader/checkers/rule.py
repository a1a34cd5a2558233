"""Rule checks: static inspection of the submission's source, in the grader's process.

The submission is parsed, never imported. Two kinds of rule:

* ``whole_operands``: parameters of the function that must not be multiplied *whole* against
  each other in one call (``a @ b``, ``np.matmul(a, b)``, ``np.dot``, ``np.einsum``...): the
  tiling rule of lab-03. Aliases (``A = np.asarray(a)``, ``a.copy()``, ``a[:, :]``) count as
  whole; slices do not.
* ``forbid_calls``: callables the function may not use, by qualified name (``numpy.matmul``,
  ``torch.matmul``); a name starting with ``.`` is a method (``.matmul``); ``@`` forbids the
  matrix-multiplication operator (and ``operator.matmul``). Names are resolved through imports
  and assignments (``mm = torch.matmul``), whole attribute chains are read
  (``torch.ops.aten.mm.default``, ``np.ndarray.dot``, ``torch.Tensor.__matmul__``: any chain
  under torch or numpy with a forbidden name in it), and a forbidden callable is found where it
  is only referred to (``map(torch.mm, ...)``), not only where it is called. ``eval``, ``exec``
  and attribute names computed at run time are reported too: they hide calls from this rule.

Both rules follow the submission's own code from the function: helpers it calls, functions and
classes it refers to (``map(helper, ...)``, a module's ``__call__``), module-level values it
reads, in the graded file and in every module of a multi-file upload it imports (``import
moe_math``, ``from moe_math import grouped``, ``from .util import *``, a function re-exported
from one); they skip functions compiled by Triton (``@triton.jit``), whose ``tl.dot`` is the
point. Static inspection is one layer; the ghost replay and the GPU profile are others.
"""

from __future__ import annotations

import ast
from collections import deque
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
LIBRARY_ROOTS = {"torch", "numpy"}
"""Chains under these roots are read whole: a forbidden name anywhere in the chain counts."""
NOT_COMPUTE = ("torch.backends.",)
"""Settings, not products (``torch.backends.cuda.matmul.allow_tf32``)."""
MATMUL_OPERATORS = {"operator.matmul", "operator.imatmul", "operator.__matmul__", "operator.__imatmul__"}
HIDDEN_CODE = {"eval", "exec", "compile", "__import__", "importlib.import_module"}


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
    """One module's parsed source and what a walk of it found."""

    tree: ast.Module
    aliases: dict[str, str] = field(default_factory=dict)
    """Local names bound to something imported: ``np`` -> ``numpy``, ``mm`` -> ``torch.matmul``."""
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    definitions: dict[str, ast.AST] = field(default_factory=dict)
    """Module-level functions, classes and assigned values, by name: what reachable code can refer to."""
    violations: list[str] = field(default_factory=list)
    """Shared by every module of one upload."""
    file: str = ""
    """The upload's file this module is (empty for the graded file)."""
    stars: list[str] = field(default_factory=list)
    """Modules whose names ``from M import *`` brings in."""

    def where(self, path: str, node: ast.AST) -> str:
        return f"{path}, line {getattr(node, 'lineno', '?')}" + (f" of {self.file}" if self.file else "")


def _absolute(module: str | None, level: int, package: str) -> str | None:
    """The absolute name of ``from <level dots><module> import ...`` in ``package``."""
    if not level:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, *([module] if module else [])]) or None


def _imports(tree: ast.Module, package: str = "") -> tuple[dict[str, str], list[str]]:
    """Local names bound by imports (``package``: the module's package, for relative imports),
    and the modules star-imported."""
    out: dict[str, str] = {"np": "numpy"}
    stars: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                out[name.asname or name.name.split(".")[0]] = name.name if name.asname else name.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, package)
            if not module:
                continue
            for name in node.names:
                if name.name == "*":
                    stars.append(module)
                else:
                    out[name.asname or name.name] = f"{module}.{name.name}"
    return out, stars


def _pairs(target: ast.AST, value: ast.AST) -> list[tuple[str, ast.AST]]:
    """(name, value) for ``a = v`` and ``a, b = v, w``."""
    if isinstance(target, ast.Name):
        return [(target.id, value)]
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) and len(target.elts) == len(value.elts):
        return [p for t, v in zip(target.elts, value.elts) for p in _pairs(t, v)]
    return []


def _aliases(out: dict[str, str], tree: ast.Module) -> dict[str, str]:
    """Imports (``out``), then every assignment anywhere of an imported thing to a name (``mm =
    torch.matmul``, ``F = torch.nn.functional``), followed to a fixed point. A name assigned both
    an imported thing and something else keeps the imported thing: the rule errs towards reporting."""
    out = dict(out)
    roots = {v.split(".")[0] for v in out.values()}
    assignments = [
        pair
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for pair in _pairs(target, node.value)
    ]
    changed = True
    while changed:
        changed = False
        for name, value in assignments:
            resolved = qualified(value, out)
            if resolved and resolved.split(".")[0] in roots and out.get(name) != resolved and name not in roots:
                out[name] = resolved
                changed = True
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


def _is_jit(fn: ast.AST, aliases: dict[str, str]) -> bool:
    for dec in getattr(fn, "decorator_list", []):
        target = dec.func if isinstance(dec, ast.Call) else dec
        if (qualified(target, aliases) or "") in JIT_DECORATORS:
            return True
    return False


def _definitions(tree: ast.Module) -> dict[str, ast.AST]:
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names = [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
                out.update({name: node for name in names})
    return out


def module_name(path: str) -> str | None:
    """The name an upload's file imports as (``pkg/util.py`` -> ``pkg.util``, ``pkg/__init__.py``
    -> ``pkg``); None for a file no import statement can name."""
    parts = path.replace("\\", "/").split("/")
    if not parts[-1].endswith(".py"):
        return None
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None


class Program:
    """The graded file and the upload's other modules, each parsed once, one list of violations."""

    def __init__(self, source: str, helpers: dict[str, str] | None = None) -> None:
        self.violations: list[str] = []
        self.main = self._analyse(ast.parse(source), "", "")
        self.modules: dict[str, Analysis] = {}
        for path, text in (helpers or {}).items():
            name = module_name(path)
            if name is None:
                continue
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue  # it cannot be imported either: calling into it fails the checks that run it
            package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
            self.modules[name] = self._analyse(tree, path, package)

    def _analyse(self, tree: ast.Module, file: str, package: str) -> Analysis:
        imported, stars = _imports(tree, package)
        analysis = Analysis(tree, _aliases(imported, tree), violations=self.violations, file=file, stars=stars)
        analysis.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        analysis.definitions = _definitions(tree)
        return analysis

    def lookup(self, qualname: str, depth: int = 0) -> tuple[Analysis, str] | None:
        """The module of the upload and the top-level name ``qualname`` refers to
        (``moe_math.grouped`` -> moe_math, ``grouped``), following re-exports; None if it is not the upload's."""
        for name in sorted(self.modules, key=len, reverse=True):
            if not qualname.startswith(name + "."):
                continue
            module = self.modules[name]
            first = qualname[len(name) + 1 :].split(".")[0]
            if first in module.definitions:
                return module, first
            if first in module.aliases and depth < 8:
                return self.lookup(module.aliases[first], depth + 1)
            for star in module.stars:
                found = self.lookup(f"{star}.{first}", depth + 1) if depth < 8 else None
                if found:
                    return found
            return None
        return None

    def resolve(self, module: Analysis, name: str) -> tuple[Analysis, str] | None:
        """Where a bare name used in ``module`` is defined: there, an import from another module
        of the upload, or a star import of one."""
        if name in module.definitions:
            return module, name
        if name in module.aliases:
            return self.lookup(module.aliases[name])
        for star in module.stars:
            found = self.lookup(f"{star}.{name}")
            if found:
                return found
        return None

    def callee(self, module: Analysis, func: ast.AST) -> tuple[Analysis, ast.FunctionDef] | None:
        """The upload's function a call's ``func`` names (``helper``, ``moe_math.helper``)."""
        if isinstance(func, ast.Name):
            found = self.resolve(module, func.id)
        else:
            name = qualified(func, module.aliases)
            found = self.lookup(name) if name else None
        if found is None:
            return None
        fn = found[0].functions.get(found[1])
        return (found[0], fn) if fn is not None else None


class _Walker:
    """The whole-operands rule: products of the named parameters, followed into called helpers."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.a = program.main
        self.visited: set[tuple[int, str, frozenset[str]]] = set()

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

    def walk(self, fn: ast.FunctionDef, tainted: set[str], path: str, module: Analysis | None = None) -> None:
        caller, self.a = self.a, module or self.a
        try:
            self._walk(fn, tainted, path)
        finally:
            self.a = caller

    def _walk(self, fn: ast.FunctionDef, tainted: set[str], path: str) -> None:
        key = (id(self.a), fn.name, frozenset(tainted))
        if key in self.visited or _is_jit(fn, self.a.aliases):
            return
        self.visited.add(key)
        tainted = set(tainted)
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and self.whole(node.value, tainted):
                tainted.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in ast.walk(fn):
            where = self.a.where(path, node)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                if self.whole(node.left, tainted) and self.whole(node.right, tainted):
                    self.a.violations.append(f"{where}: multiplies the whole operands in one step ({ast.unparse(node)})")
            if not isinstance(node, ast.Call):
                continue
            name = qualified(node.func, self.a.aliases)
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
            operands = list(node.args)
            if method in MATMUL_METHODS and name not in MATMUL_CALLS:
                operands = [node.func.value, *operands]  # type: ignore[union-attr]
            if (name in MATMUL_CALLS or method in MATMUL_METHODS) and sum(self.whole(o, tainted) for o in operands) >= 2:
                self.a.violations.append(f"{where}: multiplies the whole operands in one call ({ast.unparse(node)})")
            found = self.program.callee(self.a, node.func)
            if found is not None:
                module, callee = found
                params = [p.arg for p in callee.args.args]
                passed = {params[i] for i, arg in enumerate(node.args[: len(params)]) if self.whole(arg, tainted)}
                passed |= {kw.arg for kw in node.keywords if kw.arg and self.whole(kw.value, tainted)}
                label = callee.name if module is self.a else f"{module_name(module.file) or module.file}.{callee.name}"
                self.walk(callee, passed, f"{path} -> {label}", module)


class _Forbidden:
    """The forbid_calls rule over all code reachable from the function."""

    def __init__(self, program: Program, rules: RuleOptions) -> None:
        self.program = program
        self.a = program.main
        self.names = {n for n in rules.forbid_calls if not n.startswith(".") and n != "@"}
        self.methods = {n[1:] for n in rules.forbid_calls if n.startswith(".")}
        self.operator = "@" in rules.forbid_calls
        # A chain under torch or numpy with one of these names in it is a forbidden product
        # wherever it sits: torch.ops.aten.mm.default, numpy.ndarray.dot, torch.Tensor.__matmul__.
        self.leaves = {n.rsplit(".", 1)[-1] for n in self.names} | self.methods

    def forbidden(self, name: str) -> bool:
        if name in self.names or any(name.startswith(n + ".") for n in self.names):
            return True
        if self.operator and name in MATMUL_OPERATORS:
            return True
        parts = name.split(".")
        return parts[0] in LIBRARY_ROOTS and not name.startswith(NOT_COMPUTE) and any(p in self.leaves for p in parts[1:])

    def rooted(self, node: ast.AST) -> bool:
        """Whether a chain starts at an imported module (torch.x, np.y) rather than at a value."""
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and node.id in self.a.aliases

    def run(self, module: Analysis, name: str) -> None:
        queue: deque[tuple[Analysis, str, str]] = deque([(module, name, name)])
        seen = {(id(module), name)}
        while queue:
            self.a, name, path = queue.popleft()
            node = self.a.definitions.get(name)
            if node is None or _is_jit(node, self.a.aliases):
                continue
            for other, ref in self.visit(node, path):
                if (id(other), ref) not in seen:
                    seen.add((id(other), ref))
                    label = ref if other is self.a else f"{module_name(other.file) or other.file}.{ref}"
                    queue.append((other, ref, f"{path} -> {label}"))

    def visit(self, tree: ast.AST, path: str) -> list[tuple[Analysis, str]]:
        """Report what ``tree`` uses that is forbidden; return the top-level names of the upload's
        modules it refers to (this one's or another's)."""
        nodes = list(self.nodes(tree))
        parents = {child: node for node in nodes for child in ast.iter_child_nodes(node)}
        refs: list[tuple[Analysis, str]] = []
        report = self.a.violations.append
        for node in nodes:
            where = self.a.where(path, node)
            if self.operator and isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult):
                report(f"{where}: uses the @ operator")
            if isinstance(node, ast.Call):
                self.hidden(node, where)
            lookup = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            if not lookup and (not isinstance(node, (ast.Name, ast.Attribute)) or not isinstance(node.ctx, ast.Load)):
                continue
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue  # not the whole chain: its parent is read instead
            called = isinstance(parent, ast.Call) and parent.func is node
            name = qualified(node, self.a.aliases)
            found = self.program.resolve(self.a, node.id) if isinstance(node, ast.Name) else self.program.lookup(name or "")
            if found is not None:
                refs.append(found)
            if name and self.forbidden(name):
                report(f"{where}: {'calls' if called else 'refers to'} {name}")
            elif (isinstance(node, ast.Attribute) and not self.rooted(node)) or (lookup and not self.rooted(node.args[0])):
                # the chain's attributes after its root (a local variable, a call's result)
                parts = name.split(".")[1:] if name else [getattr(node, "attr", "")]
                method = next((p for p in reversed(parts) if p in self.methods), None)
                if method is not None:
                    report(f"{where}: {'calls the method' if called else 'refers to the method'} .{method}{'()' if called else ''}")
        return refs

    def nodes(self, tree: ast.AST) -> list[ast.AST]:
        """Every node of ``tree`` except inside Triton kernels nested in it (Triton compiles those)."""
        out, stack = [], [tree]
        while stack:
            node = stack.pop()
            out.append(node)
            for child in ast.iter_child_nodes(node):
                if not (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_jit(child, self.a.aliases)):
                    stack.append(child)
        return sorted(out, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))

    def hidden(self, call: ast.Call, where: str) -> None:
        """Calls that hide what runs from a reader: eval and friends, getattr with a computed name."""
        name = qualified(call.func, self.a.aliases)
        if name in HIDDEN_CODE:
            self.a.violations.append(f"{where}: calls {name}, which runs code this rule cannot read")
        elif name == "getattr" and len(call.args) >= 2 and not isinstance(call.args[1], ast.Constant):
            base = qualified(call.args[0], self.a.aliases) or ""
            if base.split(".")[0] in LIBRARY_ROOTS:
                self.a.violations.append(
                    f"{where}: looks up an attribute of {base} by a name computed at run time, which this rule cannot check"
                )


def analyse(source: str, rules: RuleOptions, helpers: dict[str, str] | None = None) -> list[str]:
    """Violations of ``rules`` in ``source`` and the upload's other modules it imports
    (``helpers``: relative path -> source), empty when it complies; raises SyntaxError."""
    program = Program(source, helpers)
    found = program.resolve(program.main, rules.function)
    if found is None or not isinstance(found[0].definitions.get(found[1]), ast.FunctionDef):
        return []
    module, name = found
    if rules.whole_operands:
        target = module.functions[name]
        params = [p.arg for p in target.args.args]
        _Walker(program).walk(target, {p for p in params if p in rules.whole_operands}, rules.function, module)
    if rules.forbid_calls:
        _Forbidden(program, rules).run(module, name)
    return list(dict.fromkeys(program.violations))


class RuleChecker(Checker):
    """Reads the submission's source (never imports it) and reports rule violations as errors."""

    name = "rule"
    Options = RuleOptions

    def run(self, check_id: str, check: RuleOptions, ctx: CheckContext) -> Verdict:
        source = ctx.submission.source.decode("utf-8", errors="replace")
        helpers = {path: data.decode("utf-8", errors="replace") for path, data in ctx.submission.helpers.items()}
        try:
            violations = analyse(source, check, helpers)
        except SyntaxError as exc:
            return Verdict.error(f"cannot read the source: SyntaxError at line {exc.lineno}: {exc.msg}")
        if not ctx.submission.defines(check.function):
            return Verdict.error(f"the submission defines no function {check.function}")
        if violations:
            more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
            return Verdict.error(f"breaks the lab's rule: {violations[0]}{more}", details={"violations": len(violations)})
        return Verdict.passed("follows the lab's rules (checked in the source, statically)")
