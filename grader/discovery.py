"""Finding labs, resolving exercise ids, working out which lab a file is for, and which file of
an upload (a student's folder, an LMS submission) is the submission."""

from __future__ import annotations

import ast
import dataclasses
import errno
import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import ManifestError, UsageError
from grader.manifest import MANIFEST, LabManifest, load_manifest
from grader.text import printable

EXERCISES_ENV = "GRADER_EXERCISES"
_EXERCISE_LINE = re.compile(r"""^EXERCISE\s*=\s*["']([A-Za-z0-9_.-]+)["']\s*(#.*)?$""", re.M)
_DEF_LINE = re.compile(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.M)
MAX_SUBMISSION_BYTES = 1 << 20
MAX_NOTEBOOK_BYTES = 16 << 20
"""A notebook keeps its outputs (plots, tables), so the file may be larger than the code in it."""
MAX_HELPERS = 32
SUFFIXES = (".py", ".ipynb")


def exercises_root() -> Path:
    """Where the labs live: $GRADER_EXERCISES, else the exercises/ folder beside the package."""
    if os.environ.get(EXERCISES_ENV):
        return Path(os.environ[EXERCISES_ENV])
    beside = Path(__file__).resolve().parent.parent / "exercises"
    return beside if beside.is_dir() else Path.cwd() / "exercises"


def find_labs(root: Path | None = None) -> dict[str, Path]:
    """Lab id (the folder name) -> manifest path, for every exercises/<phase>/<lab>/manifest.toml."""
    root = root or exercises_root()
    labs = {p.parent.name: p for p in sorted(root.glob(f"*/lab-*/{MANIFEST}"))}
    return labs


def resolve(exercise: str, labs: Mapping[str, Path]) -> str:
    """The lab id ``exercise`` names: an exact id, an unambiguous prefix in any case (``LAB-01``),
    or the lab's number (``1``, ``01``, ``lab1``)."""
    if exercise in labs:
        return exercise
    wanted = exercise.strip().lower()
    matches = [lab for lab in labs if lab.lower().startswith(wanted)] if wanted else []
    number = re.fullmatch(r"(?:lab-?)?0*(\d+)", wanted)
    if not matches and number:
        matches = [lab for lab in labs if (m := re.match(r"lab-0*(\d+)", lab)) and m[1] == number[1]]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = ", ".join(labs) or "none found"
        raise UsageError(f"unknown exercise {exercise!r} (labs: {known})")
    raise UsageError(f"exercise {exercise!r} is ambiguous: {', '.join(matches)}")


def parse_source(source: str) -> ast.Module | None:
    """The syntax tree of a file, or None when it has none: a syntax error, a null byte, or a tree
    too deep for the parser (RecursionError, MemoryError): any file, never an exception."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def declared_exercise(source: str) -> str | None:
    """The ``EXERCISE = "<lab-id>"`` line of a file, found without running it."""
    tree = parse_source(source)
    if tree is None:
        match = _EXERCISE_LINE.search(source)
        return match.group(1) if match else None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "EXERCISE"
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def defined_functions(source: str) -> set[str]:
    tree = parse_source(source)
    if tree is None:
        return set(_DEF_LINE.findall(source))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def lab_for_file(
    source: str, exercise: str | None, labs: Mapping[str, Path], manifests: Mapping[str, LabManifest]
) -> str:
    """--exercise, else the EXERCISE line, else the unique lab whose functions the file defines.
    An --exercise that contradicts the file's own EXERCISE line is an error: grading a whole
    file against the wrong lab would score 0 without a word."""
    declared = declared_exercise(source)
    if exercise:
        lab = resolve(exercise, labs)
        if declared and not _names_lab(declared, lab):
            raise UsageError(
                f"the file declares EXERCISE = {printable(declared, 80, False)!r} but --exercise names {lab}; "
                "fix the file's EXERCISE line or drop --exercise"
            )
        return lab
    if declared:
        return resolve(declared, labs)
    defined = defined_functions(source)
    candidates = [lab for lab, m in manifests.items() if set(m.functions) <= defined]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise UsageError(f"cannot tell which lab this file is for ({', '.join(candidates)} fit); pass --exercise")
    partial = sorted(((len(set(m.functions) & defined), lab) for lab, m in manifests.items()), reverse=True)
    near = [lab for score, lab in partial if score] or list(labs)
    raise UsageError(
        f"cannot tell which lab this file is for (candidates: {', '.join(near)}); "
        "pass --exercise or add EXERCISE = \"<lab-id>\""
    )


def safe_stem(name: str) -> str:
    """A file name's stem as a folder name that any file system and terminal accept."""
    stem = re.sub(r"[^\w.@+-]+", "_", Path(name).stem, flags=re.UNICODE).strip("._-")[:80]
    return stem or "submission"


def load_all(labs: Mapping[str, Path], checkers: Sequence[type]) -> tuple[dict[str, LabManifest], dict[str, ManifestError]]:
    """Every lab's manifest that loads, and the errors of those that do not."""
    good: dict[str, LabManifest] = {}
    bad: dict[str, ManifestError] = {}
    for lab, path in labs.items():
        try:
            good[lab] = load_manifest(path, checkers)  # type: ignore[arg-type]
        except ManifestError as exc:
            bad[lab] = exc
    return good, bad


_SKIP_DIRS = {"__pycache__", "__MACOSX", "node_modules"}
MAX_FOLDER_FILES = 500


def python_files(folder: Path) -> tuple[list[Path], list[str]]:
    """Regular ``.py`` and ``.ipynb`` files under ``folder`` (hidden and cache folders left out), and notes on the
    links and special files passed over: they could point at a solution, so they are never graded."""
    found: list[Path] = []
    notes: list[str] = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        here = Path(current)
        for name in list(dirs):
            if name.startswith(".") or name in _SKIP_DIRS:
                dirs.remove(name)
            elif (here / name).is_symlink():
                notes.append(f"{(here / name).relative_to(folder)} is a symbolic link (skipped)")
        for name in sorted(files):
            if name.startswith(".") or not name.endswith(SUFFIXES):
                continue
            path = here / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                notes.append(f"{path.relative_to(folder)} is a symbolic link (skipped)")
            elif not stat.S_ISREG(mode):
                notes.append(f"{path.relative_to(folder)} is not a regular file (skipped)")
            else:
                found.append(path)
        if len(found) > MAX_FOLDER_FILES:
            break
    return sorted(found), notes


def pick_submission(candidates: Sequence[Path], manifest: LabManifest, where: str) -> Path:
    """The one file among ``candidates`` that is the submission for ``manifest``'s lab.

    The only candidate; else the one whose ``EXERCISE`` line names the lab; else the one that
    defines the most of the lab's functions. A UsageError (one line) when none or several fit.
    """
    if not candidates:
        raise UsageError(f"{where}: no Python file (.py) or notebook (.ipynb) to grade")
    if len(candidates) == 1:
        return candidates[0]
    sources = {}
    for p in candidates:
        try:
            sources[p] = read_submission(p).text
        except UsageError:
            continue  # a link swapped in, a file grown too large: not a candidate
    declared = [p for p, text in sources.items() if _names_lab(declared_exercise(text), manifest.id)]
    if len(declared) == 1:
        return declared[0]
    pool = declared or list(sources)
    wanted = set(manifest.functions)
    scores = {p: len(wanted & defined_functions(sources[p])) for p in pool}
    best = max(scores.values(), default=0)
    winners = [p for p, score in scores.items() if score == best]
    if best and len(winners) == 1:
        return winners[0]
    names = ", ".join(p.name for p in (winners if best else candidates)[:6])
    raise UsageError(
        f"{where}: {len(candidates)} Python files and none is clearly the {manifest.id} submission ({names}); "
        f"keep one, or add EXERCISE = \"{manifest.id}\" to it"
    )


def _names_lab(declared: str | None, lab_id: str) -> bool:
    return declared is not None and declared != "" and lab_id.startswith(declared)


@dataclass(frozen=True)
class SubmissionFile:
    """A submission's bytes, read once: every later step (lab detection, hashing, grading) uses
    this copy, never the path again, so a file swapped after reading changes nothing."""

    name: str
    """The file's name as shown to people (the notebook's own name for a notebook)."""
    data: bytes
    """Python source: the file itself, or a notebook's code cells."""
    helpers: Mapping[str, bytes] = field(default_factory=dict)
    """Other Python files of the same upload, by path relative to the graded file: importable
    by it, never graded themselves."""

    @property
    def sha256(self) -> str:
        return sha256(self.data)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _open_below(path: Path, root: Path | None) -> int:
    """An fd for ``path`` opened without following a link at the last component, or, with ``root``,
    at any component below ``root`` (a folder swapped for a link mid-batch is refused too)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if root is None:
        return os.open(path, flags)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise FileNotFoundError(path) from None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)


def read_submission(path: Path, root: Path | None = None) -> SubmissionFile:
    """The submission's bytes, read once from one open file; a one-line UsageError for anything that
    is not a small regular ``.py`` file (a link, a folder, a FIFO, a device, an oversized file)."""
    path = Path(path)
    try:
        fd = _open_below(path, root)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UsageError(f"{path}: is a symbolic link (or lies behind one); submit the file itself") from None
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    problem = None
    if stat.S_ISDIR(mode):
        problem = "is a folder, not a regular file; submit the .py file itself"
    elif not stat.S_ISREG(mode):
        problem = "is not a regular file"
    elif path.suffix not in SUFFIXES:
        problem = "is not a Python file (.py) or a notebook (.ipynb)"
    if problem:
        os.close(fd)
        raise UsageError(f"{path}: {problem}")
    limit = MAX_NOTEBOOK_BYTES if path.suffix == ".ipynb" else MAX_SUBMISSION_BYTES
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{path}: is over the {limit}-byte limit")
    if path.suffix == ".ipynb":
        data = notebook_source(data, path)
        if len(data) > MAX_SUBMISSION_BYTES:
            raise UsageError(f"{path}: its code cells are over the {MAX_SUBMISSION_BYTES}-byte limit")
    return SubmissionFile(printable(path.name, 255, False), data)


_MAGIC = re.compile(r"^(\s*)([%!].*)$")


def notebook_source(raw: bytes, path: Path) -> bytes:
    """A notebook's code cells as one Python file, in order; IPython magics (``%``, ``!``, whole
    ``%%`` cells) are kept as comments, since plain Python cannot run them. UsageError if the
    file is not a notebook nbformat can read."""
    import nbformat  # only for notebook uploads

    try:
        notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as exc:  # nbformat raises many kinds on a file that is not a notebook
        raise UsageError(f"{path}: is not a readable Jupyter notebook ({type(exc).__name__})") from None
    parts = [f"# Code cells of the notebook {printable(path.name, 200, False)}, in order.\n"]
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        lines = str(cell.get("source", "")).splitlines()
        if lines and lines[0].lstrip().startswith("%%"):
            lines = ["# (a cell magic: not run) " + line for line in lines]
        else:
            lines = [_MAGIC.sub(r"\1pass  # (IPython magic, not run) \2", line) for line in lines]
        parts.append(f"\n# --- cell {number} ---\n" + "\n".join(lines) + "\n")
    return "".join(parts).encode("utf-8")


def with_helpers(file: SubmissionFile, main: Path, candidates: Sequence[Path], root: Path | None = None) -> SubmissionFile:
    """``file`` with the other Python files of its upload beside it (below the graded file's
    folder), so ``import helper`` works as it did for the student; links and oversized files
    are left out, as everywhere."""
    base = main.parent
    helpers: dict[str, bytes] = {}
    for other in candidates:
        if other == main or other.suffix != ".py" or not other.is_relative_to(base) or len(helpers) >= MAX_HELPERS:
            continue
        try:
            helpers[str(other.relative_to(base))] = read_submission(other, root).data
        except UsageError:
            continue
    return dataclasses.replace(file, helpers=helpers)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
