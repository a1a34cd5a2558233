"""Finding the submissions in a TA's folder, whatever layout it came in.

* plain files: ``DIR/ada.py`` or ``DIR/ada.ipynb`` (student = the file stem);
* one folder per student: ``DIR/ada/...`` (the one ``.py``, or the one that names or defines the lab);
* a Gradescope export: ``DIR/submission_metadata.yml`` plus ``DIR/submission_12345/...``, the
  metadata naming the students of each submission;
* a Canvas export: flat files ``lastname_firstname_12345_67890_starter.py`` (student = the part
  before the numeric ids; ``_late`` is dropped), each name read on its own, so a stray file
  among them is one more student, not a reason to read none of them.

Symbolic links and special files are never graded (a link can point at a solution); they are
listed, with the reason, among the skipped entries, as is anything else that cannot be graded.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from grader.discovery import SUFFIXES, declared_exercise, pick_submission, python_files, read_submission
from grader.errors import UsageError
from grader.manifest import LabManifest
from grader.text import printable

GRADESCOPE_METADATA = "submission_metadata.yml"
CANVAS_NAME = re.compile(
    r"^(?P<student>[^_].*?)(?:_late)?_(?P<user>\d+)_(?P<attachment>\d+)_(?P<file>.+?)(?:-(?P<again>\d+))?(?P<suffix>\.py|\.ipynb)$", re.I
)
"""Canvas's download name: ``<name>[_late]_<user id>_<attachment id>_<file>[-<n>].<ext>`` (``-n``:
a resubmitted file whose name an earlier attempt had), read file by file."""
RESERVED = {"summary.md", "gradebook.csv", "histogram.png", "skipped.csv", "batch.log"}


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
    warning: str | None = None
    """Something the TA must know (the file names another lab), said loudly; it is graded anyway."""
    people: list[dict[str, str]] = field(default_factory=list)
    """Who submitted it, where the export says (Gradescope: name, email, sid): for score uploads."""


@dataclass
class Skipped:
    """Something in the batch folder that was not graded, and why."""

    name: str
    reason: str


def safe_name(text: str) -> str:
    """A student's name as a folder name: readable for any Unicode (letters and digits of every
    script are kept), stable (it depends on the name alone, never on the rest of the roster),
    at most 80 UTF-8 bytes. A name with nothing readable left gets a hash of itself."""
    text = unicodedata.normalize("NFC", printable(text, keep_newlines=False))
    name = re.sub(r"[^\w.@+-]+", "_", text.strip(), flags=re.UNICODE).strip("._-")
    while len(name.encode("utf-8")) > 80:
        name = name[:-1]
    return name or f"student-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


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
    entries: list[tuple[str, Path, str, list[dict[str, str]]]] = []  # (student, file, layout, people)
    skipped: list[Skipped] = []

    def add_folder(folder: Path, student: str, layout: str, people: list[dict[str, str]] | None = None) -> None:
        files, notes = python_files(folder)
        try:
            path = pick_submission(files, manifest, folder.name)
        except UsageError as exc:
            skipped.append(Skipped(folder.name, str(exc).split(": ", 1)[-1] + (f" ({'; '.join(notes)})" if notes else "")))
            return
        entries.append((student, path, layout, people or []))

    children = sorted(root.iterdir(), key=lambda p: p.name)
    metadata = root / GRADESCOPE_METADATA
    gradescope = read_gradescope_metadata(metadata) if metadata.is_file() and not metadata.is_symlink() else None
    # Top-level files, grouped by student: a Canvas-style name gives the student, any other the stem.
    file_groups: dict[tuple[str, str], list[Path]] = defaultdict(list)

    for path in children:
        name = path.name
        if name == GRADESCOPE_METADATA:
            continue
        if name.startswith("."):
            if not (excluded is not None and excluded == path.resolve()):
                skipped.append(Skipped(name, "is hidden (its name starts with a dot); rename it to grade it"))
            continue
        why = _special(path)
        if why:
            skipped.append(Skipped(name, why))
        elif excluded is not None and excluded.is_relative_to(path.resolve()):
            continue  # the output folder itself, inside the batch folder
        elif path.is_dir():
            if gradescope is not None and name in gradescope:
                add_folder(path, display_name(gradescope[name]) or name, "gradescope", gradescope[name])
            else:
                add_folder(path, name, "gradescope" if gradescope is not None else "folder")
        elif path.suffix not in SUFFIXES:
            skipped.append(Skipped(name, "is not a Python file (.py) or a notebook (.ipynb)"))
        else:
            match = CANVAS_NAME.match(name)
            file_groups[(match["student"], "canvas") if match else (path.stem, "file")].append(path)
    for (student, layout), files in file_groups.items():
        try:
            path = pick_submission(sorted(files), manifest, student)
        except UsageError as exc:
            skipped.append(Skipped(student, str(exc).split(": ", 1)[-1]))
            continue
        entries.append((student, path, layout, []))
    if gradescope is not None:
        present = {p.name for p in children}
        for folder, names in gradescope.items():
            if folder not in present:
                skipped.append(Skipped(folder, f"named in {GRADESCOPE_METADATA} ({display_name(names)}) but has no folder"))
    return _finish(root, manifest, entries, skipped)


def _finish(
    root: Path, manifest: LabManifest, raw: list[tuple[str, Path, str, list[dict[str, str]]]], skipped: list[Skipped]
) -> tuple[list[Entry], list[Skipped]]:
    """Read each chosen file once (hash, EXERCISE line) and give each student a unique folder name.
    Two students whose names clean to the same folder are told apart by a hash of their own
    original name, so nobody's folder depends on who else is in the class."""
    out: list[Entry] = []
    keys: dict[str, list[tuple[str, Path, str, list[dict[str, str]]]]] = defaultdict(list)
    for item in raw:
        keys[safe_name(item[0]).lower()].append(item)
    for group in keys.values():
        for student, path, layout, people in group:
            rel = printable(str(path.relative_to(root)), keep_newlines=False)
            try:
                file = read_submission(path, root)
            except UsageError as exc:
                skipped.append(Skipped(rel, str(exc).split(": ", 1)[-1]))
                continue
            key = safe_name(student)
            if len(group) > 1:
                own = (student + "\0" + rel).encode("utf-8", "replace")
                key = f"{key}-{hashlib.sha256(own).hexdigest()[:6]}"
            if key.lower() in RESERVED:
                key += "-student"
            declared = declared_exercise(file.text)
            warning = None
            if declared and not manifest.id.startswith(declared):
                warning = f"{rel} declares EXERCISE = {printable(declared, 60, False)!r} but is graded as {manifest.id}"
            out.append(Entry(key, path, rel, file.sha256, layout, warning, people))
    out.sort(key=lambda e: (e.student.lower(), e.file))
    skipped.sort(key=lambda s: s.name)
    return out, skipped


class _MetadataLoader(yaml.SafeLoader):
    """YAML's safe loader that reads Ruby-tagged values (``!ruby/object:...``) as plain data."""


_MetadataLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_object(
    yaml.SequenceNode("tag:yaml.org,2002:seq", node.value) if isinstance(node, yaml.SequenceNode)
    else yaml.MappingNode("tag:yaml.org,2002:map", node.value) if isinstance(node, yaml.MappingNode)
    else yaml.ScalarNode("tag:yaml.org,2002:str", node.value), deep=True))  # fmt: skip


def read_gradescope_metadata(path: Path) -> dict[str, list[dict[str, str]]]:
    """Submission folder -> its submitters (``name``, ``email``, ``sid``, each only when given),
    from Gradescope's ``submission_metadata.yml`` (YAML with Ruby-symbol keys: ``:submitters:``).
    UsageError (one line) if the file is not YAML."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=_MetadataLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: is not valid YAML ({type(exc).__name__}); re-download the export") from None
    out: dict[str, list[dict[str, str]]] = {}
    for folder, info in (data or {}).items() if isinstance(data, dict) else ():
        people = info.get(":submitters") or info.get("submitters") or [] if isinstance(info, dict) else []
        out[str(folder)] = [
            {key: str(person[f":{key}"] if f":{key}" in person else person[key]).strip()
             for key in ("name", "email", "sid") if f":{key}" in person or key in person}
            for person in people if isinstance(person, dict)
        ]  # fmt: skip
    return out


def display_name(people: list[dict[str, str]]) -> str:
    """Submitters as one readable student key: names, else emails, else ids, joined by +."""
    return " + ".join(p.get("name") or p.get("email") or p.get("sid") or "?" for p in people)
