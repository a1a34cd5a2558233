"""The house as drawn in docs/architecture.md: which module may import which.

The graph counts every import statement in a module: at the top, inside functions and under
``TYPE_CHECKING`` alike (a typing-only import is still a dependency a reader has to follow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "grader"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_package() -> None:
    assert "grader.session" in GRAPH and "grader.checkers.base" in GRAPH["grader.session"]
    assert GRAPH["grader.cli"], "the graph found no imports at all"


def test_no_import_circle_anywhere_in_grader() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", ["grader.lms", "grader.reporters", "grader.checkers"])
def test_formats_reporters_and_checkers_stay_below_the_commands(layer: str) -> None:
    for name, imports in GRAPH.items():
        if name == layer or name.startswith(layer + "."):
            above = sorted(m for m in imports if m == "grader.cli" or m.startswith("grader.batch"))
            assert not above, f"{name} imports {above}"


def test_lms_modules_grade_only_through_the_session() -> None:
    for name, imports in GRAPH.items():
        if name.startswith("grader.lms."):
            inner = sorted(m for m in imports if m.startswith(("grader.sandbox", "grader.checkers", "grader.lab")))
            assert not inner, f"{name} reaches past the grading session into {inner}"


def test_built_in_checkers_use_the_public_api() -> None:
    """A built-in checker imports what a third-party one can: grader.api, not private names."""
    for name, path in MODULES.items():
        if name.startswith("grader.checkers.") and name not in ("grader.checkers.base", "grader.checkers.compare"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grader"):
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    assert not private, f"{name} imports private names {private} from {node.module}"


def test_labs_import_only_the_public_api() -> None:
    """A lab's own files (lab.py, solution.py) use what a course can rely on: grader.api."""
    exercises = PACKAGE.parent / "exercises"
    for path in sorted(exercises.glob("*/lab-*/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "grader":
                if path.name != "test_lab.py":
                    assert node.module == "grader.api", f"{path.relative_to(exercises)} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.split(".")[0] == "grader"], path
