"""Gradescope, the whole platform: ``results.json`` in its format, its container, the autograder
zip (``grader lms gradescope build``), its score upload and its submissions export.

The zip (``grader lms gradescope build``) holds ``setup.sh`` (run once when Gradescope builds
its image: bubblewrap, a venv, CPU torch, this package from the copy in the zip),
``run_autograder`` (run per submission), ``grader.env`` (the lab and the secret seed), the
package source and the one lab folder, without its ``wrong/`` and ``accepted/`` files (known
answers) or test folders.

``run_autograder`` first writes a valid fallback ``results.json`` (score 0, explanation), then
runs ``grader lms gradescope run`` under a timeout; the grader replaces the file atomically
when it finishes. If the grader crashes, is killed, or cannot even start, the fallback stays,
amended with what happened. The grader's own output goes to run_autograder's stdout, which
Gradescope keeps in ``/autograder/results/stdout``; nothing is ever parsed out of it.

An upload that holds no submission (nothing to grade, several candidates, a file for another
lab) scores 0 with the reason and "upload again": Gradescope has no "not graded" state, and a
new upload replaces the old one.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shlex
import stat
import sys
import zipfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from grader import __version__
from grader.environment import extra_for
from grader.errors import UsageError
from grader.flags import positive
from grader.lms.base import Export, LabLoader, LmsFormat
from grader.lms.container import Container
from grader.manifest import LabManifest
from grader.reporters.markdown import block, cell, code, table
from grader.results import CheckResult, GradeResult, Problem, Status, Visibility
from grader.text import printable

TEMPLATES = Path(__file__).parent / "templates"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
TEST_OUTPUT_LIMIT = 8000
OUTPUT_LIMIT = 16000
LAB_EXCLUDE = {"wrong", "accepted", "tests", "__pycache__", ".pytest_cache"}
METADATA = "submission_metadata.yml"
"""The export's list of submitters per ``submission_<id>/`` folder."""


def clip(text: str, limit: int) -> str:
    """Printable text of at most about ``limit`` characters, saying how much was cut."""
    text = printable(text)
    return text if len(text) <= limit else text[: max(0, limit - 40)] + f"\n... ({len(text) - limit + 40} more characters cut)"


STUDENT_INFRA = (
    "NOT GRADED: the autograder could not grade this upload. This is a problem on the course's side, "
    "not in your files; the course staff can see the details. Your score is 0 until it is fixed and regraded."
)


def check_output(check: CheckResult, limit: int = TEST_OUTPUT_LIMIT) -> str:
    """A check's explanation in Markdown: message, first mismatches, measured numbers, traceback,
    hint. Text that came from the submission sits in code blocks and escaped table cells, so it
    renders as text and never as links, images or HTML."""
    lines = [f"**{check.status.value.upper()}**", "", block(check.message), ""]
    if check.mismatches:
        lines += ["First mismatches:", "", "| where | expected | got |", "| --- | --- | --- |"]
        lines += [f"| {code(m.where, in_table=True)} | {cell(m.expected)} | {cell(m.got)} |" for m in check.mismatches]
        lines.append("")
    if check.details:
        lines += table([{"measured": k, "value": str(v)} for k, v in check.details.items()]) + [""]
    if check.traceback.strip():
        lines += [block(check.traceback.strip()[-3000:]), ""]
    if check.hint and check.status is not Status.passed:
        lines.append(f"**What to look at:** {cell(check.hint, 1000)}")
    return clip("\n".join(lines), limit)


def pending_note(checks: list[CheckResult]) -> str:
    """The sentence that says which points are graded later on a GPU machine."""
    points = sum(c.max_score for c in checks)
    names = ", ".join(c.id for c in checks)
    return f"{points:g} points ({names}) need a GPU and are graded later on the course's GPU machine; they are pending, not failed."


class GradescopeFormat(LmsFormat):
    """Gradescope's ``results.json`` (specs: gradescope-autograders.readthedocs.io, "specs")."""

    name = "gradescope"
    label = "Gradescope"
    title = "Gradescope: build the autograder zip; grade inside it"
    filename = "results.json"
    container = Container("AUTOGRADER_ROOT", "/autograder", "submission", "results/results.json", 600.0)
    score_header = ("Name", "SID", "Email", "Score")

    def payload(self, result: GradeResult) -> dict[str, Any]:
        tests = []
        for number, check in enumerate(result.checks, start=1):
            test: dict[str, Any] = {
                "name": f"{check.id}: {check.title}",
                "number": str(number),
                "output": check_output(check),
                "visibility": check.visibility.value,
                "tags": [check.function, check.kind],
                "extra_data": {"check": check.id, "status": check.status.value, "duration_s": check.duration_s},
            }
            if check.deferred:
                # Informational (no score): a pending check must never show as a failed one.
                test["name"] += " (pending)"
                test["output"] = f"**PENDING**: graded later on the course's GPU machine ({check.max_score:g} points)."
            else:
                test["score"] = float(check.score)
                test["max_score"] = float(check.max_score)
                test["status"] = "passed" if check.status is Status.passed else "failed"
            tests.append(test)
        all_visible = all(c.visibility is Visibility.visible for c in result.checks)
        if all_visible:
            lines = [f"**{result.exercise}: {result.score:g} / {result.max_score:g} ({result.percent:.0f}%)**"]
        else:
            # Gradescope hides the total from students when tests are hidden; so does this text.
            lines = [f"**{result.exercise}**: the checks you can see are below. Some checks stay hidden "
                     "until the course releases them, and so does your total."]  # fmt: skip
        lines += ["", f"Graded file: {code(result.submission)}" + (
            f" (with your modules {', '.join(code(h) for h in result.helper_files)})" if result.helper_files else ""
        )]  # fmt: skip
        pending = [c for c in result.checks if c.deferred]
        if pending:
            lines += ["", pending_note(pending)]
        if not result.gradable:
            if result.problem is Problem.submission:
                lines += ["", f"**NOT GRADED**: {cell(result.error or '', 2000)}", "",
                          "Fix your files and upload again."]  # fmt: skip
            else:
                lines += ["", STUDENT_INFRA]
        if result.submission_output.strip() and all_visible:
            lines += ["", "What your code printed (last lines):", "", block(result.submission_output.strip())]
        payload: dict[str, Any] = {
            "score": float(result.score) if result.gradable else 0.0,
            "execution_time": round(result.duration_s, 3),
            "output": clip("\n".join(lines), OUTPUT_LIMIT),
            "output_format": "md",
            "test_output_format": "md",
            "test_name_format": "text",
            "stdout_visibility": "hidden",
            "tests": tests,
            "extra_data": {
                "grader": result.environment.grader,
                "exercise": result.exercise,
                "max_score": result.max_score,
                "gradable": result.gradable,
                "problem": result.problem.value if result.problem else None,
                "error": result.error,
                "submission": printable(result.submission, 200, False),
                "submission_sha256": result.submission_sha256,
                "sandbox": result.sandbox.mode,
                "official": result.official,
            },
        }
        # The leaderboard is public to the class: a hidden check's numbers would publish it.
        board = [
            {"name": f"{check.id}: {entry.name}", "value": entry.value, "order": entry.order}
            for check in result.checks
            if check.visibility is Visibility.visible
            for entry in check.leaderboard
        ]
        if board:
            payload["leaderboard"] = board
        return payload

    def error_payload(self, reason: str) -> dict[str, Any]:
        return {
            "score": 0.0,
            "output": STUDENT_INFRA,
            "output_format": "md",
            "stdout_visibility": "hidden",
            "tests": [],
            "extra_data": {"grader": __version__, "gradable": False, "error": clip(reason, 4000)},
        }

    def score_rows(
        self, student: str, people: Sequence[Mapping[str, str]], points: float, feedback: list[str], args: argparse.Namespace
    ) -> list[list[str]]:
        """One row per submitter (from the export's metadata), for the score upload of a companion
        assignment that holds the deferred points."""
        return [[p.get("name", ""), p.get("sid", ""), p.get("email", ""), f"{points:g}"] for p in people or [{"name": student}]]

    def read_export(self, folder: Path) -> Export | None:
        metadata = folder / METADATA
        if not metadata.is_file() or metadata.is_symlink():
            return None
        return Export(METADATA, read_metadata(metadata))

    def add_commands(self, actions: argparse._SubParsersAction, lab: LabLoader) -> None:
        p = actions.add_parser("build", help="write the autograder zip to upload to Gradescope")
        p.add_argument("--exercise", "-e", required=True, help="lab id or unambiguous prefix")
        p.add_argument("--out", type=Path, help="the zip (default: gradescope-autograder-<lab-id>.zip)")
        p.add_argument("--torch", help="pip requirement for the CPU torch build (default: this grader's torch version)")
        p.add_argument("--secret-seed", help="secret mixed into every input (default: $GRADER_SECRET_SEED, else a random one)")
        p.add_argument("--timeout", type=positive, default=540, help="seconds before run_autograder stops the grader (default 540)")
        p.add_argument(
            "--allow-unsandboxed", action="store_true",
            help="grade even where no tier keeps solutions, secret and network out of reach (degraded, said in every result)",
        )  # fmt: skip
        p.set_defaults(handler=lambda args: self.build(args, lab(args.exercise)))

    def build(self, args: argparse.Namespace, manifest: LabManifest) -> int:
        """``grader lms gradescope build``: the zip, and which points it grades on upload."""
        out = args.out or Path(f"gradescope-autograder-{manifest.id}.zip")
        secret = args.secret_seed or os.environ.get("GRADER_SECRET_SEED") or None
        try:
            build_autograder(manifest, out, args.torch, secret, args.timeout, args.allow_unsandboxed)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        print(f"{out}: Gradescope autograder for {manifest.id} (upload it under Configure Autograder > Zip file upload)")
        for line in self.describe_plan(manifest):
            print(line)
        if not secret:
            print("note: the zip holds a random secret seed; build with --secret-seed (or $GRADER_SECRET_SEED) to grade "
                  "deferred checks later on the same inputs students were graded on")  # fmt: skip
        return 0


# --- the submissions export --------------------------------------------------------------------


class _MetadataLoader(yaml.SafeLoader):
    """YAML's safe loader that reads Ruby-tagged values (``!ruby/object:...``) as plain data."""


_MetadataLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_object(
    yaml.SequenceNode("tag:yaml.org,2002:seq", node.value) if isinstance(node, yaml.SequenceNode)
    else yaml.MappingNode("tag:yaml.org,2002:map", node.value) if isinstance(node, yaml.MappingNode)
    else yaml.ScalarNode("tag:yaml.org,2002:str", node.value), deep=True))  # fmt: skip


def read_metadata(path: Path) -> dict[str, list[dict[str, str]]]:
    """Submission folder -> its submitters (``name``, ``email``, ``sid``, each only when given),
    from an export's ``submission_metadata.yml`` (YAML with Ruby-symbol keys: ``:submitters:``).
    UsageError (one line) if the file is not YAML."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=_MetadataLoader)
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


# --- the autograder zip ------------------------------------------------------------------------


def default_torch() -> str:
    """The torch this grader runs with, as a pip requirement for the CPU build (local tag dropped)."""
    try:
        return "torch==" + metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return "torch"


def needs_triton(manifest: LabManifest) -> bool:
    """Whether the lab's workers import triton (about 1 GB: installed only for labs that need it)."""
    worker = manifest.lab.worker
    return "triton" in worker.imports or any("TRITON" in key for key in {**worker.env, **worker.cpu_env})


def lab_extras(manifest: LabManifest) -> tuple[str, ...]:
    """The grader's extras the lab needs: triton where its workers import it, and the extra that
    installs each distribution of ``lab.requires`` (transformers for lab-02)."""
    names = {"triton"} if needs_triton(manifest) else set()
    for text in manifest.lab.requires:
        extra = extra_for(Requirement(text).name)
        if extra:
            names.add(extra)
    return tuple(sorted(names))


def pinned_requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """``name==version`` for every distribution this grader installs with (its requirements and
    theirs, markers evaluated here), as installed on the machine building the zip: the image
    gets exactly what the course tested with. torch comes from the CPU index, separately."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    todo = [(req, extras) for req in metadata.requires("grader") or []]
    while todo:
        text, wanted = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*wanted, "")):
            continue
        name = req.name.lower().replace("_", "-")
        if name in pins or name in ("torch", "pip", "setuptools"):
            continue
        try:
            pins[name] = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue  # required only where this machine does not need it
        todo += [(sub, tuple(req.extras)) for sub in metadata.requires(req.name) or []]
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _add_tree(zf: zipfile.ZipFile, source: Path, prefix: str, exclude: set[str], mode: int = 0o644) -> None:
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part in exclude or part.startswith(".") for part in rel.parts) or path.suffix == ".pyc":
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            continue
        if path.is_file():
            # test_lab.py stays: the manifest loader requires it, and it only calls grader.testing.
            if path.name.startswith("test_") and path.suffix == ".py" and path.name != "test_lab.py":
                continue
            _write(zf, f"{prefix}/{rel.as_posix()}", path.read_bytes(), mode)


def _write(zf: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def _write_dir(zf: zipfile.ZipFile, name: str, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = ((stat.S_IFDIR | mode) << 16) | 0x10  # 0x10: the MS-DOS directory flag
    zf.writestr(info, b"")


def _project_root() -> Path:
    root = PACKAGE_DIR.parent
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"no pyproject.toml beside {PACKAGE_DIR}: build the zip from a source checkout")
    return root


def build_autograder(
    manifest: LabManifest,
    out: Path,
    torch: str | None = None,
    secret_seed: str | None = None,
    timeout_s: int = 540,
    allow_unsandboxed: bool = False,
) -> Path:
    """Write the Gradescope autograder zip for ``manifest``'s lab to ``out``."""
    root = _project_root()
    lab_dir = manifest.directory
    lab_rel = f"exercises/{lab_dir.parent.name}/{lab_dir.name}"
    extras = lab_extras(manifest)
    settings = {
        "EXERCISE": manifest.id,
        "GRADER_SECRET_SEED": secret_seed or secrets.token_hex(16),
        "GRADER_TIMEOUT_S": str(timeout_s),
        "GRADER_ALLOW_UNSANDBOXED": "1" if allow_unsandboxed else "0",
        "GRADER_TORCH": torch or default_torch(),
        "GRADER_PYTHON_VERSION": f"{sys.version_info.major}.{sys.version_info.minor}",
        "GRADER_EXTRAS": ",".join(extras),
    }
    env = "".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        _write(zf, "setup.sh", (TEMPLATES / "gradescope_setup.sh").read_bytes(), 0o755)
        _write(zf, "run_autograder", (TEMPLATES / "gradescope_run_autograder").read_bytes(), 0o755)
        _write(zf, "grader.env", ("# written by grader lms gradescope build; sourced by setup.sh and run_autograder\n" + env).encode(), 0o600)
        _write(zf, "constraints.txt", "".join(f"{pin}\n" for pin in pinned_requirements(extras)).encode(), 0o644)
        for name in ("pyproject.toml", "README.md"):
            _write(zf, f"package/{name}", (root / name).read_bytes(), 0o644)
        _add_tree(zf, PACKAGE_DIR, "package/grader", {"__pycache__"})
        # The lab (solution, lab.py, manifest) is root-only: a worker that runs under a uid of its
        # own cannot read it even where neither bubblewrap nor Landlock hides it.
        _write_dir(zf, f"{lab_rel}/", 0o700)
        _add_tree(zf, lab_dir, lab_rel, LAB_EXCLUDE, 0o600)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, out)
    return out
