"""Finding the submissions in a TA's folder, whatever layout it came in.

* plain files: ``DIR/ada.py`` (student = the file stem);
* one folder per student: ``DIR/ada/...`` (the one ``.py``, or the one that names or defines the lab);
* a Gradescope export: ``DIR/submission_metadata.yml`` plus ``DIR/submission_12345/...``, the
  metadata naming the students of each submission;
* a Canvas export: flat files ``lastname_firstname_12345_67890_starter.py`` (student = the part
  before the numeric ids; ``_late`` is dropped).

Symbolic links and special files are never graded (a link can point at a solution); they are
listed, with the reason, among the skipped entries, as is anything else that cannot be graded.
"""

from __future__ import annotations

import os
import re
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from grader.discovery import pick_submission, python_files, read_submission
from grader.errors import UsageError
from grader.manifest import LabManifest

GRADESCOPE_METADATA = "submission_metadata.yml"
CANVAS_NAME = re.compile(r"^(?P<student>.+?)(?:_late)?_(?P<user>\d+)_(?P<attachment>\d+)_(?P<file>.+\.py)$", re.I)
RESERVED = {"summary.md", "gradebook.csv", "histogram.png", "batch.log"}


@dataclass
class Entry:
    """One submission to grade: a student, the file, and the hash of its content."""

    student: str
    """A unique, file-system-safe name: the folder of the student's reports."""
    path: Path
    file: str
    """The file, relative to the batch folder (for the gradebook)."""
    sha256: str
    layout: str


@dataclass
class Skipped:
    """Something in the batch folder that was not graded, and why."""

    name: str
    reason: str


def safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._@+-]+", "_", text.strip()).strip("._-")[:80]
    return name or "student"


def _special(path: Path) -> str | None:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link (it could point at a solution); put the file itself there"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "is not a regular file"
    return None


def find_submissions(root: Path, manifest: LabManifest, exclude: Path | None = None) -> tuple[list[Entry], list[Skipped]]:
    """Every submission under ``root``, one per student, and the entries that were skipped."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    excluded = exclude.resolve() if exclude is not None else None
    entries: list[tuple[str, Path, str]] = []  # (student, file, layout)
    skipped: list[Skipped] = []

    def add_folder(folder: Path, student: str, layout: str) -> None:
        files, notes = python_files(folder)
        try:
            path = pick_submission(files, manifest, folder.name)
        except UsageError as exc:
            skipped.append(Skipped(folder.name, str(exc).split(": ", 1)[-1] + (f" ({'; '.join(notes)})" if notes else "")))
            return
        entries.append((student, path, layout))

    children = sorted(root.iterdir(), key=lambda p: p.name)
    metadata = root / GRADESCOPE_METADATA
    gradescope = read_gradescope_metadata(metadata) if metadata.is_file() and not metadata.is_symlink() else None
    top_files = [p for p in children if p.suffix == ".py" and not p.name.startswith(".") and _special(p) is None and p.is_file()]
    canvas = bool(top_files) and all(CANVAS_NAME.match(p.name) for p in top_files)
    canvas_groups: dict[str, list[Path]] = defaultdict(list)

    for path in children:
        name = path.name
        if name.startswith(".") or name == GRADESCOPE_METADATA:
            continue
        why = _special(path)
        if why:
            skipped.append(Skipped(name, why))
        elif excluded is not None and excluded.is_relative_to(path.resolve()):
            continue  # the output folder itself, inside the batch folder
        elif path.is_dir():
            if gradescope is not None and name in gradescope:
                add_folder(path, " + ".join(gradescope[name]) or name, "gradescope")
            else:
                add_folder(path, name, "gradescope" if gradescope is not None else "folder")
        elif path.suffix != ".py":
            skipped.append(Skipped(name, "is not a Python (.py) file"))
        elif canvas:
            match = CANVAS_NAME.match(name)
            assert match is not None
            canvas_groups[match.group("student")].append(path)
        else:
            entries.append((path.stem, path, "file"))
    for student, files in canvas_groups.items():
        try:
            path = pick_submission(sorted(files), manifest, student)
        except UsageError as exc:
            skipped.append(Skipped(student, str(exc).split(": ", 1)[-1]))
            continue
        entries.append((student, path, "canvas"))
    if gradescope is not None:
        present = {p.name for p in children}
        for folder, names in gradescope.items():
            if folder not in present:
                skipped.append(Skipped(folder, f"named in {GRADESCOPE_METADATA} ({' + '.join(names)}) but has no folder"))
    return _finish(root, entries, skipped)


def _finish(root: Path, raw: list[tuple[str, Path, str]], skipped: list[Skipped]) -> tuple[list[Entry], list[Skipped]]:
    taken: set[str] = set()
    out: list[Entry] = []
    for student, path, layout in sorted(raw, key=lambda r: (r[0].lower(), str(r[1]))):
        rel = str(path.relative_to(root))
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            skipped.append(Skipped(rel.encode("utf-8", "replace").decode(), "its name is not valid UTF-8; rename it"))
            continue
        try:
            digest = read_submission(path, root).sha256
        except UsageError as exc:
            skipped.append(Skipped(rel, str(exc).split(": ", 1)[-1]))
            continue
        base = safe_name(student)
        if base.lower() in RESERVED:
            base += "-student"
        key, n = base, 2
        while key.lower() in taken:
            key, n = f"{base}-{n}", n + 1
        taken.add(key.lower())
        out.append(Entry(key, path, rel, digest, layout))
    skipped.sort(key=lambda s: s.name)
    return out, skipped


_TOP_KEY = re.compile(r"^([^\s#:-][^:]*):\s*$")
_ITEM = re.compile(r"^(\s*)(-\s+)?:?(name|sid|email):\s*(.*?)\s*$")


def read_gradescope_metadata(path: Path) -> dict[str, list[str]]:
    """Submission folder -> the names of its submitters, from Gradescope's ``submission_metadata.yml``.

    The file is YAML with Ruby-symbol keys (``:submitters:``, ``- :name: Jane Doe``). Only the
    submitters are needed, so this reads those lines rather than depend on a YAML library;
    the name falls back to the email, then the student id.
    """
    out: dict[str, list[str]] = {}
    current: str | None = None
    people: list[dict[str, str]] = []
    in_submitters = False
    submitters_indent = 0

    def flush() -> None:
        if current is not None:
            out[current] = [p.get("name") or p.get("email") or p.get("sid") or "?" for p in people]

    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        top = _TOP_KEY.match(line)
        if top:
            flush()
            current, people, in_submitters = top.group(1).strip().strip("'\""), [], False
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if stripped.startswith(":submitters:") or stripped.startswith("submitters:"):
            in_submitters, submitters_indent = True, indent
            continue
        if not in_submitters:
            continue
        if indent < submitters_indent or (indent == submitters_indent and not stripped.startswith("-")):
            in_submitters = False
            continue
        item = _ITEM.match(line)
        if item:
            if item.group(2) or not people:
                people.append({})
            people[-1][item.group(3)] = item.group(4).strip("'\"")
    flush()
    return out
