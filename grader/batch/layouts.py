"""Finding the submissions in a TA's folder, whatever layout it came in.

* plain files: ``DIR/ada.py`` or ``DIR/ada.ipynb`` (student = the file stem);
* one folder per student: ``DIR/ada/...``, an upload as an LMS gets it (the graded file is the
  one, or the one that names or defines the lab; the other ``.py`` files are its helpers);
* a platform's export, which an LMS format recognises (``LmsFormat.read_export``): its folders
  are submissions, and its own file names the students of each;
* a Canvas export: flat files ``lastname_firstname_12345_67890_starter.py`` (student = the part
  before the numeric ids; ``_late`` is dropped), each under the name its student gave it; each
  name is read on its own, so a stray file among them is one more student, not a reason to read
  none of them.

Each submission goes through the one intake (:func:`grader.discovery.read_upload`), read once
here: the batch hands the workers these bytes and never the path. Symbolic links and special
files are never graded (a link can point at a solution); they are listed, with the reason,
among the skipped entries, as is every upload that holds no submission.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grader.discovery import SUFFIXES, SubmissionFile, read_upload
from grader.errors import UploadError, UsageError
from grader.lms.base import Export, LmsFormat
from grader.manifest import LabManifest
from grader.plugins import default as default_plugins
from grader.text import printable

CANVAS_NAME = re.compile(
    r"^(?P<student>[^_].*?)(?:_late)?_(?P<user>\d+)_(?P<attachment>\d+)_(?P<file>.+?)(?:-(?P<again>\d+))?(?P<suffix>\.py|\.ipynb)$", re.I
)
"""Canvas's download name: ``<name>[_late]_<user id>_<attachment id>_<file>[-<n>].<ext>`` (``-n``:
a resubmitted file whose name an earlier attempt had), read file by file."""
RESERVED = {"summary.md", "gradebook.csv", "histogram.png", "skipped.csv", "batch.log"}


@dataclass
class Entry:
    """One submission to grade: a student, the file graded, and the submission as read."""

    student: str
    """A unique, file-system-safe name: the folder of the student's reports."""
    file: str
    """The graded file, relative to the batch folder (for the gradebook)."""
    submission: SubmissionFile
    """What is graded: the file's bytes and its helper modules, read once."""
    layout: str
    warning: str | None = None
    """Something the TA must know (links or files left out of the upload), said loudly; it is graded anyway."""
    people: list[dict[str, str]] = field(default_factory=list)
    """Who submitted it, where the export says (name, email, sid): for score uploads."""

    @property
    def sha256(self) -> str:
        return self.submission.sha256


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


Source = Path | Mapping[str, Path]
"""A student's upload: a file, a folder, or files under the names the student gave them."""


def find_submissions(
    root: Path, manifest: LabManifest, exclude: Path | None = None, formats: Sequence[LmsFormat] | None = None
) -> tuple[list[Entry], list[Skipped]]:
    """Every submission under ``root``, one per student, and the entries that were skipped.
    ``formats``: the platforms whose exports are recognised (default: every registered one)."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    excluded = exclude.resolve() if exclude is not None else None
    raw: list[tuple[str, str, Source, str, list[dict[str, str]]]] = []  # (student, entry name, upload, layout, people)
    skipped: list[Skipped] = []

    children = sorted(root.iterdir(), key=lambda p: p.name)
    export, platform = _export(root, formats)
    canvas_groups: dict[str, dict[str, Path]] = defaultdict(dict)
    attempts: dict[tuple[str, str], int] = {}

    for path in children:
        name = path.name
        if export is not None and name == export.source:
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
            if export is not None and name in export.people:
                raw.append((display_name(export.people[name]) or name, name, path, platform, export.people[name]))
            else:
                raw.append((name, name, path, platform if export is not None else "folder", []))
        elif path.suffix not in SUFFIXES:
            skipped.append(Skipped(name, "is not a Python file (.py) or a notebook (.ipynb)"))
        elif (match := CANVAS_NAME.match(name)) is not None:
            # the name the student gave the file; of a resubmitted name (``-n``), the latest attempt
            student, given = match.group("student"), match.group("file") + match.group("suffix").lower()
            again = int(match.group("again") or 0)
            if attempts.get((student, given), -1) < again:
                attempts[student, given] = again
                canvas_groups[student][given] = path
        else:
            raw.append((path.stem, name, path, "file", []))
    for student, files in canvas_groups.items():
        raw.append((student, student, files, "canvas", []))
    if export is not None:
        present = {p.name for p in children}
        for folder, names in export.people.items():
            if folder not in present:
                skipped.append(Skipped(folder, f"named in {export.source} ({display_name(names)}) but has no folder"))
    return _finish(root, manifest, raw, skipped)


def submissions_to_grade(root: Path, manifest: LabManifest, exclude: Path | None = None) -> tuple[list[Entry], list[Skipped]]:
    """:func:`find_submissions`, and a one-line UsageError (saying why, from the first skipped
    entry) when there is nothing to grade: what ``grader batch`` and ``grader slurm`` start from."""
    entries, skipped = find_submissions(root, manifest, exclude=exclude)
    if not entries:
        why = f" ({len(skipped)} entries skipped, e.g. {skipped[0].name}: {skipped[0].reason})" if skipped else ""
        raise UsageError(f"{root}: no submissions to grade{why}")
    return entries, skipped


def _export(root: Path, formats: Sequence[LmsFormat] | None) -> tuple[Export | None, str]:
    """The platform export ``root`` is, if any, and the platform's name."""
    if formats is None:
        formats = [cls() for cls in default_plugins().lms_classes.values()]
    for fmt in formats:
        export = fmt.read_export(root)
        if export is not None:
            return export, fmt.name
    return None, ""


def _finish(
    root: Path, manifest: LabManifest, raw: list[tuple[str, str, Source, str, list[dict[str, str]]]], skipped: list[Skipped]
) -> tuple[list[Entry], list[Skipped]]:
    """Read each upload once, through the intake, and give each student a unique folder name.
    Two students whose names clean to the same folder are told apart by a hash of their own
    original name, so nobody's folder depends on who else is in the class."""
    out: list[Entry] = []
    keys: dict[str, list[tuple[str, str, Source, str, list[dict[str, str]]]]] = defaultdict(list)
    for item in raw:
        keys[safe_name(item[0]).lower()].append(item)
    for group in keys.values():
        for student, name, source, layout, people in group:
            shown = printable(name, keep_newlines=False)
            try:
                upload = read_upload(source, root, where=shown)
                main = upload.main(manifest)
                submission = upload.submission(manifest)
            except UploadError as exc:
                skipped.append(Skipped(shown, exc.reason))
                continue
            rel = printable(str(upload.origins[main].relative_to(root)), keep_newlines=False)
            key = safe_name(student)
            if len(group) > 1:
                own = (student + "\0" + rel).encode("utf-8", "replace")
                key = f"{key}-{hashlib.sha256(own).hexdigest()[:6]}"
            if key.lower() in RESERVED:
                key += "-student"
            warning = "; ".join(upload.notes) or None
            out.append(Entry(key, rel, submission, layout, warning, people))
    out.sort(key=lambda e: (e.student.lower(), e.file))
    skipped.sort(key=lambda s: s.name)
    return out, skipped


def display_name(people: list[dict[str, str]]) -> str:
    """Submitters as one readable student key: names, else emails, else ids, joined by +."""
    return " + ".join(p.get("name") or p.get("email") or p.get("sid") or "?" for p in people)
