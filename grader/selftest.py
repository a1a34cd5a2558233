"""``grader selftest``: a lab proves its own checkers, as a contest judge's problem package does.

* ``solution.py`` and every ``accepted/`` file (valid alternatives) pass every check that runs;
* ``starter.py`` scores 0 and the grading completes (no crash, gradable);
* every ``wrong/`` file gets the verdict its header names on the check it names, e.g.
  ``# expect: grouped-matches-reference`` (``failed`` by default, or ``# expect: ID error``),
  and scores below full marks;
* a ``wrong/`` file whose header says ``# ignores-inputs: FUNCTION`` (its FUNCTION returns
  something fixed, or derived from sizes alone) scores 0 on every check of FUNCTION: a check
  that such a function can pass proves nothing about the function;
* every check is failed by at least one wrong file.

A known file is a whole ``.py`` file, or a ``.patch`` against ``solution.py`` (see
:mod:`grader.patch`): the bug alone, applied to the current solution when the self-test runs, so
it cannot drift; a patch that no longer applies fails the self-test.

Checks that need a GPU are skipped without one; what they would prove is then listed as
unproven, not as a failure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TextIO

from grader import discovery, patch
from grader.discovery import SubmissionFile
from grader.errors import InfrastructureError, UsageError
from grader.manifest import Hardware, LabManifest
from grader.plugins import Plugins
from grader.results import GradeResult, Status
from grader.session import Grader, GradingOptions

EXPECT = re.compile(r"^#\s*expect:\s*([A-Za-z0-9_.-]+)(?:\s+(failed|error))?\s*$", re.M)
IGNORES = re.compile(r"^#\s*ignores-inputs:\s*([A-Za-z_]\w*)\s*$", re.M)


def expectations(text: str) -> list[tuple[str, Status]]:
    """The ``# expect: <check-id> [failed|error]`` lines of a wrong file (or of a patch's preamble)."""
    return [(cid, Status(status or "failed")) for cid, status in EXPECT.findall(text)]


def ignoring(text: str) -> list[str]:
    """The functions a wrong file's ``# ignores-inputs: FUNCTION`` lines name."""
    return IGNORES.findall(text)


def known_files(lab_dir: Path, folder: str) -> list[Path]:
    """The whole files and patches under ``lab_dir/folder``, by name."""
    return sorted(p for p in (lab_dir / folder).glob("*") if p.suffix in (".py", ".patch") and p.is_file())


def materialize(path: Path, lab_dir: Path) -> SubmissionFile:
    """A known file as a student would hand it in: the file itself, or its patch applied to the
    current solution. Raises patch.PatchError when a patch no longer applies."""
    if path.suffix != ".patch":
        return discovery.read_submission(path)
    diff = patch.parse(path.read_text(encoding="utf-8"))
    solution = (lab_dir / "solution.py").read_text(encoding="utf-8")
    return discovery.source_file(path.with_suffix(".py").name, patch.apply(diff, solution).encode("utf-8"))


def _score(r: GradeResult) -> str:
    return f"{r.score:g}/{r.max_score:g}"


def run_selftest(
    manifest: LabManifest, options: GradingOptions, plugins: Plugins, out: TextIO, reports: Path | None = None
) -> bool:
    """Run the self-test of one lab, print one line per file, and say whether it all held.
    With ``reports``, every graded file's result.json, scorecard.md and junit.xml are written
    to ``reports/<lab-id>/<file>/``."""
    grader = Grader(manifest, options, plugins)
    root = manifest.directory
    ok = True
    try:
        mode = grader.launcher().mode
    except InfrastructureError as exc:  # a missing extra, no sandbox: every file would say the same
        print(f"selftest {manifest.id}: FAIL  nothing can be graded here: {exc}", file=out)
        return False
    print(f"selftest {manifest.id} (sandbox: {mode})", file=out)

    def line(good: bool, name: str, text: str) -> None:
        nonlocal ok
        ok &= good
        print(f"  {'ok  ' if good else 'FAIL'}  {name:<40} {text}", file=out)

    def grade(path: Path) -> GradeResult | None:
        name = str(path.relative_to(root))
        out = None if reports is None else reports / manifest.id / str(Path(name).with_suffix("")).replace("/", "-")
        try:
            return grader.grade_file(discovery.intake(materialize(path, root), manifest), out)
        except (patch.PatchError, UsageError, OSError) as exc:
            line(False, name, f"cannot be graded: {exc}")
            return None

    for path in [root / "solution.py", *known_files(root, "accepted")]:
        r = grade(path)
        if r is None:
            continue
        bad = [c for c in r.checks if c.status not in (Status.passed, Status.skipped)]
        skipped = [c for c in r.checks if c.status is Status.skipped]
        note = f" ({len(skipped)} skipped: need a GPU)" if skipped else ""
        if bad:
            line(False, str(path.relative_to(root)), f"{_score(r)}: {bad[0].id} {bad[0].status.value}: {bad[0].message[:120]}")
        else:
            line(r.gradable, str(path.relative_to(root)), f"{_score(r)} every check passed{note}")

    r = grade(root / "starter.py")
    if r is not None:
        passed = [c.id for c in r.checks if c.status is Status.passed]
        if not r.gradable:
            line(False, "starter.py", f"not gradable: {r.error}")
        elif passed or r.score:
            line(False, "starter.py", f"{_score(r)}: should score 0, passed {', '.join(passed)}")
        else:
            line(True, "starter.py", f"{_score(r)} graded without a crash, nothing passed")

    caught: set[str] = set()
    unproven: set[str] = set()
    for path in known_files(root, "wrong"):
        name = str(path.relative_to(root))
        header = path.read_text(encoding="utf-8", errors="replace")
        wanted, blind = expectations(header), ignoring(header)
        if not wanted and not blind:
            line(False, name, "names no check: add a line '# expect: <check-id>' (or '# ignores-inputs: <function>')")
            continue
        r = grade(path)
        if r is None:
            continue
        by_id = {c.id: c for c in r.checks}
        for cid, status in wanted:
            got = by_id.get(cid)
            if got is None:
                line(False, name, f"expects {cid}, which the manifest does not define")
            elif got.status is Status.skipped:
                unproven.add(cid)
                line(True, name, f"{cid}: skipped here ({got.message[:60]}); unproven without a GPU")
            elif got.status is not status:
                line(False, name, f"{cid}: {got.status.value}, expected {status.value}: {got.message[:100]}")
            elif r.score >= r.max_score:
                line(False, name, f"{cid}: {status.value}, yet the file scores full marks")
            else:
                caught.add(cid)
                line(True, name, f"{cid}: {status.value} as expected ({_score(r)})")
        for function in blind:
            checks = [c for c in r.checks if c.function == function]
            earned = [c for c in checks if c.score > 0 or c.status is Status.passed]
            on_gpu = [c.id for c in checks if c.status is Status.skipped and manifest.checks[c.id].requires is Hardware.gpu]
            if function not in manifest.functions:
                line(False, name, f"ignores-inputs names {function}, which the manifest does not define")
            elif not checks:
                line(False, name, f"ignores the inputs of {function}, which no check grades")
            elif earned:
                got = ", ".join(f"{c.id} ({c.status.value}, {c.score:g})" for c in earned)
                line(False, name, f"{function} ignores its inputs, yet earns points: {got}")
            else:
                caught.update(c.id for c in checks if c.status in (Status.failed, Status.error))
                unproven.update(on_gpu)
                note = f"; {len(on_gpu)} unproven without a GPU" if on_gpu else ""
                line(True, name, f"{function} ignores its inputs: 0 on all {len(checks)} of its checks ({_score(r)}{note})")
    missing = [cid for cid in manifest.checks if cid not in caught and cid not in unproven]
    if missing:
        line(False, "wrong/", f"no wrong file fails: {', '.join(missing)}")
    else:
        line(True, "wrong/", "every check is failed by at least one wrong file" + (
            f" ({len(unproven)} unproven without a GPU)" if unproven else ""))  # fmt: skip
    return ok
