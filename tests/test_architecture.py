"""The house as drawn in docs/architecture.md: which module may import which.

The graph counts every import statement in a module: at the top, inside functions and under
``TYPE_CHECKING`` alike (a typing-only import is still a dependency a reader has to follow).
"""

from __future__ import annotations

import ast
import re
import textwrap
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


# --- the layers docs/architecture.md states --------------------------------------------------------

DOC = PACKAGE.parent / "docs" / "architecture.md"
LAYER_LINE = re.compile(r"^(\d+)\. \*\*(.+?)\*\*: (.+)$", re.MULTILINE)


def _layers(text: str) -> list[tuple[str, list[str]]]:
    """The numbered layer list of docs/architecture.md ("What may import what"): each layer's
    title and its module patterns (``cli``, ``batch.*``, ``grader`` for the package itself)."""
    section = text.split("## What may import what", 1)[1].split("\n## ", 1)[0]
    return [(title, re.findall(r"`([\w.*]+)`", rest)) for _, title, rest in LAYER_LINE.findall(section)]


LAYERS = _layers(DOC.read_text(encoding="utf-8"))


def _layer_of(module: str, layers: list[tuple[str, list[str]]] = LAYERS) -> int | None:
    """The layer (0 the top) whose most specific pattern matches ``module``: an exact name beats a
    wildcard, a longer wildcard a shorter one."""
    name = module.removeprefix("grader.") if module != "grader" else "grader"
    best: tuple[int, int] | None = None  # (specificity, layer)
    for layer, (_, patterns) in enumerate(layers):
        for pattern in patterns:
            if pattern == name:
                rank = 10_000
            elif pattern.endswith(".*") and (name == pattern[:-2] or name.startswith(pattern[:-1])):
                rank = len(pattern)
            else:
                continue
            if best is None or rank > best[0]:
                best = (rank, layer)
    return None if best is None else best[1]


def _upward(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]]) -> list[str]:
    out = []
    for name, imports in sorted(graph.items()):
        mine = _layer_of(name, layers)
        for target in sorted(imports):
            theirs = _layer_of(target, layers)
            if mine is not None and theirs is not None and theirs < mine:
                out.append(f"{name} ({layers[mine][0]}) imports {target} ({layers[theirs][0]})")
    return out


def test_the_doc_states_six_layers_and_every_module_has_one() -> None:
    assert [title for title, _ in LAYERS] == ["commands", "the session", "plugins and formats", "the contract", "parts", "leaves"]
    unplaced = sorted(m for m in MODULES if _layer_of(m) is None)
    assert not unplaced, f"docs/architecture.md puts these modules in no layer: {unplaced}"


def test_no_import_runs_up_the_layers() -> None:
    assert _upward(GRAPH, LAYERS) == []


def test_the_layer_check_finds_an_upward_import() -> None:
    layers = [("top", ["cli", "lms.*"]), ("middle", ["session", "lms.base"]), ("bottom", ["discovery"])]
    graph = {"grader.discovery": {"grader.session"}, "grader.lms.base": {"grader.lms.gradescope"}, "grader.cli": {"grader.discovery"}}
    assert _upward(graph, layers) == [
        "grader.discovery (bottom) imports grader.session (middle)",
        "grader.lms.base (middle) imports grader.lms.gradescope (top)",
    ]


# --- one door per idea --------------------------------------------------------------------------------

ENTRY_POINTS = ["grader.cli", "grader.batch.worker", "grader.selftest", "grader.testing"]
"""Every module that grades a submission for a user: each grades through grade_file."""


def _calls(path: Path, methods_only: bool = False) -> list[str]:
    """The names of everything a module calls (``f(...)`` and ``x.f(...)``; only the latter with ``methods_only``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                out.append(func.attr)
            elif isinstance(func, ast.Name) and not methods_only:
                out.append(func.id)
    return out


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_entry_point_grades_through_grade_file(module: str) -> None:
    calls = _calls(MODULES[module])
    assert "grade_file" in calls, f"{module} does not grade through grade_file"


def test_only_the_session_grades_and_only_the_intake_makes_a_submission() -> None:
    for name, path in MODULES.items():
        if name != "grader.session":
            assert "grade" not in _calls(path, methods_only=True), f"{name} calls .grade() past grade_file (which also reports and fires the hooks)"
        if name != "grader.discovery":
            assert "SubmissionFile" not in _calls(path), f"{name} makes a SubmissionFile itself instead of through the intake"


# --- a platform is one plugin ------------------------------------------------------------------------


def _platform_names() -> set[str]:
    from grader import plugins

    formats = plugins.build(autoload=False).lms_classes.values()
    return {word.lower() for cls in formats for word in (cls.name, cls.label) if word}


def _named(source: str, names: set[str]) -> list[str]:
    """Identifiers and string constants (docstrings aside) of ``source`` that name one of ``names``."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    found = []
    for node in ast.walk(tree):
        words: list[str] = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = [node.value]
        elif isinstance(node, ast.Name):
            words = [node.id]
        elif isinstance(node, ast.Attribute):
            words = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words = [node.name]
        elif isinstance(node, ast.alias):
            words = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            words = [node.module or ""]
        found += [w for w in words if any(n in w.lower() for n in names)]
    return found


def test_the_container_adapter_is_reached_through_the_platform_only() -> None:
    """cli and the batch get a platform's container from its format, never from lms.container."""
    users = sorted(n for n, imports in GRAPH.items() if "grader.lms.container" in imports)
    assert all(n.startswith("grader.lms.") or n == "grader.api" for n in users), users


def test_no_module_outside_lms_names_a_platform() -> None:
    names = _platform_names()
    assert {"gradescope", "prairielearn"} <= names
    for name, path in MODULES.items():
        if name == "grader.lms" or name.startswith("grader.lms."):
            continue
        assert not _named(path.read_text(encoding="utf-8"), names), f"{name} names a platform: {_named(path.read_text(encoding='utf-8'), names)}"


def test_the_platform_check_sees_names_in_code_but_not_in_docstrings() -> None:
    source = textwrap.dedent(
        '''
        """Works like Gradescope's own tool."""
        from grader.lms.gradescope import GradescopeFormat

        def run(platform):
            """For PrairieLearn too."""
            if platform == "prairielearn":
                return GradescopeFormat()
        '''
    )
    assert sorted(_named(source, {"gradescope", "prairielearn"})) == ["GradescopeFormat", "GradescopeFormat", "grader.lms.gradescope", "prairielearn"]


# --- docs/architecture.md lists every module -----------------------------------------------------------


def _listed(path: Path, text: str) -> bool:
    """Whether the folder table names ``path`` (``grader/x.py``, or ``x.py`` in its folder's row)."""
    rel = path.relative_to(PACKAGE.parent)
    if f"`{rel.as_posix()}`" in text:
        return True
    folder = rel.parent.as_posix() + "/"
    for row in text.splitlines():
        cells = row.split("|")
        if len(cells) < 3:
            continue
        first = cells[1]
        if folder == "grader/" and f"`{rel.name}`" in first:
            return True
        if folder != "grader/" and f"`{folder}`" in first and f"`{rel.name}`" in row:
            return True
    return False


def test_docs_architecture_lists_every_module() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(str(p.relative_to(PACKAGE.parent)) for p in MODULES.values() if p.name != "__init__.py" and not _listed(p, text))
    assert not missing, f"docs/architecture.md does not list {missing}"
