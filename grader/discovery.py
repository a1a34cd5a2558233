"""The one intake: from what a student handed in to the submission the session grades.

Every entry point (``grader submit``, the batch, the LMS containers, the self-test, the labs'
pytest) goes through here, so the same bytes become the same :class:`SubmissionFile` whatever
door they came through. An upload (a file, a notebook, a folder, several files) is read once
into an :class:`Upload`; :func:`resolve_lab` says which lab it is for (``--exercise``, else the
``EXERCISE`` line, else the functions defined, else the only lab there is);
:meth:`Upload.submission` picks the graded file and gives it the upload's other modules as
helpers. Anything that cannot become a submission is an :class:`~grader.errors.UploadError`,
one line the student can act on."""

from __future__ import annotations

import ast
import base64
import dataclasses
import errno
import functools
import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from grader.errors import ManifestError, UploadError, UsageError
from grader.manifest import MANIFEST, LabManifest, load_manifest
from grader.text import encoding_problem, printable

EXERCISES_ENV = "GRADER_EXERCISES"
_EXERCISE_LINE = re.compile(r"""^EXERCISE\s*=\s*["']([A-Za-z0-9_.-]+)["']\s*(#.*)?$""", re.M)
_DEF_LINE = re.compile(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.M)
MAX_SUBMISSION_BYTES = 1 << 20
MAX_NOTEBOOK_BYTES = 16 << 20
"""A notebook keeps its outputs (plots, tables), so the file may be larger than the code in it."""
MAX_HELPERS = 32
MAX_UPLOAD_BYTES = 32 << 20
"""What one upload may hold in all: files past it are left out, with a note."""
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


@functools.lru_cache(maxsize=8)
def parse_source(source: str) -> ast.Module | None:
    """The syntax tree of a file, or None when it has none: a syntax error, a null byte, or a tree
    too deep for the parser (RecursionError, MemoryError): any file, never an exception. Parsed
    once for the several questions the intake asks of one upload (its EXERCISE line, what it
    defines, provides and imports); the tree is shared, so its readers never change it."""
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
    """The top-level functions a file defines, found without running it (a file that does not
    parse is read line by line)."""
    tree = parse_source(source)
    if tree is None:
        return set(_DEF_LINE.findall(source))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def provided_names(source: str) -> set[str]:
    """The top-level names a file gives its importers: what it defines, and what it imports by
    name (``from moe_kernels import fused_moe`` re-exports ``fused_moe``)."""
    tree = parse_source(source)
    if tree is None:
        return defined_functions(source)
    names = defined_functions(source)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names if a.name != "*"}
    return names


def imported_modules(source: str) -> set[str]:
    """The modules a file imports at any depth, by their dotted names and by their last part
    (``import src.helpers`` -> ``src.helpers``, ``helpers``; ``from . import x`` -> ``x``)."""
    tree = parse_source(source)
    if tree is None:
        return set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dotted = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            dotted = [node.module] if node.module else [a.name for a in node.names]
        else:
            continue
        for name in dotted:
            out |= {name, name.rsplit(".", 1)[-1]}
    return out


def _names_lab(declared: str | None, lab_id: str) -> bool:
    """Whether an EXERCISE line names ``lab_id`` (as ``--exercise`` would: the id or a prefix of it)."""
    if not declared:
        return False
    try:
        return resolve(declared, {lab_id: Path()}) == lab_id
    except UsageError:
        return False


# --- which lab ---------------------------------------------------------------------------------


def resolve_lab(
    exercise: str | None, upload: Upload | None, labs: Mapping[str, Path], checkers: Sequence[type]
) -> LabManifest:
    """The lab an upload is for, loaded and validated (see :func:`lab_for`)."""
    return load_manifest(labs[lab_for(exercise, upload, labs, checkers)], checkers)  # type: ignore[arg-type]


def lab_for(exercise: str | None, upload: Upload | None, labs: Mapping[str, Path], checkers: Sequence[type]) -> str:
    """The id of the lab an upload is for: ``exercise`` (an id or an unambiguous prefix); else
    the lab its files' ``EXERCISE`` lines name; else the unique lab whose functions one of its
    files defines; else the only lab there is. A one-line UsageError naming the candidates
    when none of these tells. Whether the graded file agrees is :meth:`Upload.submission`'s."""
    if not labs:
        raise UsageError(f"no labs found under {exercises_root()} (set {EXERCISES_ENV})")
    if exercise:
        return resolve(exercise, labs)
    files = dict(upload.files) if upload is not None else {}
    what = "this file" if len(files) == 1 else "this upload"
    named: dict[str, str] = {}
    unresolved: list[str] = []
    for name, file in files.items():
        declared = declared_exercise(file.text)
        if not declared:
            continue
        try:
            named.setdefault(resolve(declared, labs), name)
        except UsageError as exc:
            unresolved.append(f"{printable(name, 100, False)}: its EXERCISE line names {exc}")
    if len(named) == 1:
        return next(iter(named))
    if named:
        listed = ", ".join(f"{printable(name, 100, False)} names {lab}" for lab, name in named.items())
        raise UsageError(f"cannot tell which lab {what} is for ({listed}); pass --exercise")
    if unresolved:
        raise UsageError(f"{unresolved[0]}; fix the line or pass --exercise")
    defined = [defined_functions(file.text) for file in files.values()]
    manifests, _ = load_all(labs, checkers) if defined else ({}, {})
    fits = [lab for lab, m in manifests.items() if m.functions and any(set(m.functions) <= d for d in defined)]
    if len(fits) == 1:
        return fits[0]
    if len(labs) == 1:
        return next(iter(labs))
    if fits:
        raise UsageError(f"cannot tell which lab {what} is for ({', '.join(fits)} fit); pass --exercise")
    every = set().union(*defined) if defined else set()
    partial = sorted(((len(set(m.functions) & every), lab) for lab, m in manifests.items()), reverse=True)
    near = [lab for score, lab in partial if score] or list(labs)
    unreadable = [(name, encoding_problem(f.data)) for name, f in files.items() if Path(name).suffix == ".py"]
    unreadable = [(name, why) for name, why in unreadable if why]
    if unreadable and len(unreadable) == len(files):  # nothing in the upload could be read as Python
        name, why = unreadable[0]
        raise UsageError(f"{printable(name, 100, False)}: {why}")
    raise UsageError(
        f"cannot tell which lab {what} is for (candidates: {', '.join(near)}); "
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


# --- an upload, read once ----------------------------------------------------------------------

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

    @functools.cached_property
    def sha256(self) -> str:
        """What was graded, as one hash: the file's own bytes; with helper modules, the file and
        every helper (by its path) together, so a changed helper is a changed submission."""
        if not self.helpers:
            return sha256(self.data)
        digest = hashlib.sha256()
        for part in (self.data, *(p for rel in sorted(self.helpers) for p in (rel.encode(), self.helpers[rel]))):
            digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    def to_wire(self) -> dict[str, Any]:
        """As plain JSON for a trusted channel (the batch's workers): bytes in base64."""
        helpers = {k: _b64(v) for k, v in self.helpers.items()}
        return {"name": self.name, "data": _b64(self.data), "helpers": helpers}

    @classmethod
    def from_wire(cls, message: Mapping[str, Any]) -> SubmissionFile:
        decode = base64.b64decode
        helpers = {str(k): decode(v) for k, v in dict(message.get("helpers") or {}).items()}
        return cls(str(message["name"]), decode(message["data"]), helpers)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Upload:
    """What was handed in, read once: each of its Python files and notebooks by its path in the
    upload (``moe.py``, ``src/helpers.py``), and notes on what was passed over (links, special
    files, files too large). Nothing here reads the disk again."""

    where: str
    """How a refusal names the upload: a path, a student's folder, "your upload"."""
    files: Mapping[str, SubmissionFile] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    origins: Mapping[str, Path] = field(default_factory=dict)
    """Where each file was read from."""

    def _refuse(self, reason: str) -> UploadError:
        return UploadError(self.where, reason + (f" ({'; '.join(self.notes)})" if self.notes else ""))

    def main(self, manifest: LabManifest) -> str:
        """Which file is graded for ``manifest``'s lab: the only one; else the one whose
        ``EXERCISE`` line names the lab; else the one that defines the most of its functions.
        UploadError when there is none, or several fit and none is clearly it."""
        if not self.files:
            raise self._refuse("no Python file (.py) or notebook (.ipynb) to grade")
        if len(self.files) == 1:
            return next(iter(self.files))
        declared = [n for n, f in self.files.items() if _names_lab(declared_exercise(f.text), manifest.id)]
        if len(declared) == 1:
            return declared[0]
        pool = declared or list(self.files)
        wanted = set(manifest.functions)
        scores = {n: len(wanted & provided_names(self.files[n].text)) for n in pool}
        best = max(scores.values(), default=0)
        winners = [n for n, score in scores.items() if score == best]
        if best and len(winners) > 1:
            # a file that another file of the upload imports is a helper, not the graded file
            imported = set().union(*(imported_modules(f.text) for f in self.files.values()))
            winners = [n for n in winners if PurePosixPath(n).stem not in imported and _module(n) not in imported] or winners
        if best and len(winners) == 1:
            return winners[0]
        names = ", ".join(printable(n, 100, False) for n in (winners if best else list(self.files))[:6])
        raise self._refuse(
            f"{len(self.files)} Python files and none is clearly the {manifest.id} submission ({names}); "
            f"keep one, or add EXERCISE = \"{manifest.id}\" to it"
        )

    def submission(self, manifest: LabManifest) -> SubmissionFile:
        """The graded file for ``manifest``'s lab with the upload's other ``.py`` files below its
        folder as helpers, so ``import helper`` works as it did for the student. UploadError as
        :meth:`main`, and when the graded file's ``EXERCISE`` line names another lab (grading a
        file against the wrong lab would score 0 without a word)."""
        name = self.main(manifest)
        file = self.files[name]
        declared = declared_exercise(file.text)
        if declared and not _names_lab(declared, manifest.id):
            raise UploadError(
                "",
                f"{printable(name, 100, False)} declares EXERCISE = {printable(declared, 80, False)!r} but this is "
                f"{manifest.id}: hand in your {manifest.id} file, or fix its EXERCISE line",
            )
        base = PurePosixPath(name).parent
        helpers: dict[str, bytes] = {}
        for other in sorted(self.files, key=lambda n: (n.count("/"), n)):  # the nearest first, if over MAX_HELPERS
            rel = PurePosixPath(other)
            if other == name or rel.suffix != ".py" or len(helpers) >= MAX_HELPERS:
                continue
            if base.parts and rel.parts[: len(base.parts)] != base.parts:
                continue  # above the graded file's folder: not importable from it
            helpers[rel.relative_to(base).as_posix() if base.parts else other] = self.files[other].data
        return dataclasses.replace(file, helpers=helpers)


def _module(name: str) -> str:
    """The dotted module name of an upload's file (``src/helpers.py`` -> ``src.helpers``)."""
    return ".".join(PurePosixPath(name).with_suffix("").parts)


def read_upload(
    source: Path | str | Sequence[Path] | Mapping[str, Path] | SubmissionFile,
    root: Path | None = None,
    where: str | None = None,
) -> Upload:
    """An upload read once: one file (a UsageError, one line, if it cannot be read); a folder
    (every Python file and notebook below it); several files; or files under names of their own
    (an export that renamed them: name -> path); or a file already in memory. In a folder or
    under names, what cannot be read (a link, a special file, a file too large) is passed over
    with a note. With ``root``, no link is followed anywhere below it."""
    if isinstance(source, SubmissionFile):
        return Upload(where or source.name, {source.name: source})
    if isinstance(source, Mapping):
        return _read_named(dict(source), root, where or "the upload")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if _is_folder(path):
            found, notes = python_files(path)
            named = {p.relative_to(path).as_posix(): p for p in found}
            return _read_named(named, root or path, where or str(path), notes)
        file = read_submission(path, root)
        return Upload(where or str(path), {file.name: file}, origins={file.name: path})
    paths = [Path(p) for p in source]
    if len(paths) == 1:
        return read_upload(paths[0], root, where)
    parent = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths] or ["."]))
    files: dict[str, SubmissionFile] = {}
    origins: dict[str, Path] = {}
    for path in paths:
        if _is_folder(path):
            raise UploadError(str(path), "is a folder: hand in a folder alone, or the files in it")
        key = Path(os.path.abspath(path)).relative_to(parent).as_posix()
        files[key] = read_submission(path, root)
        origins[key] = path
    return Upload(where or ", ".join(str(p) for p in paths[:3]), files, origins=origins)


def intake(
    source: Path | str | Sequence[Path] | Mapping[str, Path] | SubmissionFile,
    manifest: LabManifest,
    root: Path | None = None,
    where: str | None = None,
) -> SubmissionFile:
    """The submission in ``source`` for ``manifest``'s lab: :func:`read_upload`, then
    :meth:`Upload.submission`; UsageError (UploadError) in one line when there is none."""
    return read_upload(source, root, where).submission(manifest)


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_named(named: Mapping[str, Path], root: Path | None, where: str, notes: Sequence[str] = ()) -> Upload:
    files: dict[str, SubmissionFile] = {}
    origins: dict[str, Path] = {}
    kept = list(notes)
    total = 0
    for key, path in named.items():
        shown = printable(key, 100, False)
        if total > MAX_UPLOAD_BYTES:
            kept.append(f"{shown} left out: the upload is over {MAX_UPLOAD_BYTES} bytes")
            continue
        try:
            file = read_submission(path, root)
        except UploadError as exc:
            kept.append(f"{shown} {exc.reason} (skipped)")
            continue
        files[key] = file
        origins[key] = path
        total += len(file.data)
    return Upload(where, files, tuple(kept), origins)


# --- one file ----------------------------------------------------------------------------------


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
    """The submission's bytes, read once from one open file; a one-line UploadError for anything
    that is not a small regular ``.py`` file or notebook (a link, a folder, a FIFO, a device, an
    oversized file)."""
    path = Path(path)
    try:
        fd = _open_below(path, root)
    except FileNotFoundError:
        raise UploadError(str(path), "no such file") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UploadError(str(path), "is a symbolic link (or lies behind one); submit the file itself") from None
        raise UploadError(str(path), f"cannot read ({exc.strerror})") from None
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
        raise UploadError(str(path), problem)
    limit = MAX_NOTEBOOK_BYTES if path.suffix == ".ipynb" else MAX_SUBMISSION_BYTES
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UploadError(str(path), f"is over the {limit}-byte limit")
    if path.suffix == ".ipynb":
        data = notebook_source(data, path)
        if len(data) > MAX_SUBMISSION_BYTES:
            raise UploadError(str(path), f"its code cells are over the {MAX_SUBMISSION_BYTES}-byte limit")
    return SubmissionFile(printable(path.name, 255, False), data)


def source_file(name: str, data: bytes) -> SubmissionFile:
    """A submission made in memory (a known-wrong patch applied to the solution), named as a file would be."""
    return SubmissionFile(printable(name, 255, False), data)


_MAGIC = re.compile(r"^(\s*)([%!].*)$")


def notebook_source(raw: bytes, path: Path) -> bytes:
    """A notebook's code cells as one Python file, in order; IPython magics (``%``, ``!``, whole
    ``%%`` cells) are kept as comments, since plain Python cannot run them. UploadError if the
    file is not a notebook nbformat can read."""
    import nbformat  # only for notebook uploads

    try:
        notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as exc:  # nbformat raises many kinds on a file that is not a notebook
        raise UploadError(str(path), f"is not a readable Jupyter notebook ({type(exc).__name__})") from None
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
