"""``grader selftest``: a lab proves its own checkers, as a contest judge's problem package does.

* ``solution.py`` and every ``accepted/*.py`` (valid alternatives) pass every check that runs;
* ``starter.py`` scores 0 and the grading completes (no crash, gradable);
* every ``wrong/*.py`` gets the verdict its header names on the check it names, e.g.
  ``# expect: grouped-matches-reference`` (``failed`` by default, or ``# expect: ID error``),
  and scores below full marks;
* every check is failed by at least one wrong file.

Checks that need a GPU are skipped without one; what they would prove is then listed as
unproven, not as a failure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TextIO

from grader.lab import Lab
from grader.manifest import LabManifest
from grader.plugins import Plugins
from grader.results import GradeResult, Status
from grader.sandbox.launchers import Launcher
from grader.seeds import Seeds
from grader.session import Grader

EXPECT = re.compile(r"^#\s*expect:\s*([A-Za-z0-9_.-]+)(?:\s+(failed|error))?\s*$", re.M)


def expectations(path: Path) -> list[tuple[str, Status]]:
    """The ``# expect: <check-id> [failed|error]`` lines of a wrong file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(cid, Status(status or "failed")) for cid, status in EXPECT.findall(text)]


def _score(r: GradeResult) -> str:
    return f"{r.score:g}/{r.max_score:g}"


def run_selftest(
    manifest: LabManifest, plugins: Plugins, launcher: Launcher, out: TextIO, reports: Path | None = None
) -> bool:
    """Run the self-test of one lab, print one line per file, and say whether it all held.
    With ``reports``, every graded file's result.json, scorecard.md and junit.xml are written
    to ``reports/<lab-id>/<file>/``."""
    lab = Lab(manifest)
    base = Grader(lab, plugins, launcher, Seeds.from_env())

    class _Recording:
        def grade(self, path: Path) -> GradeResult:
            result = base.grade(path)
            if reports is not None:
                folder = reports / manifest.id / str(path.relative_to(manifest.directory).with_suffix("")).replace("/", "-")
                folder.mkdir(parents=True, exist_ok=True)
                for cls in plugins.reporter_classes.values():
                    if cls.filename is not None:
                        cls().write(result, folder)
            return result

    grader = _Recording()
    root = manifest.directory
    ok = True
    print(f"selftest {manifest.id} (sandbox: {launcher.mode})", file=out)

    def line(good: bool, name: str, text: str) -> None:
        nonlocal ok
        ok &= good
        print(f"  {'ok  ' if good else 'FAIL'}  {name:<40} {text}", file=out)

    for path in [root / "solution.py", *sorted((root / "accepted").glob("*.py"))]:
        r = grader.grade(path)
        bad = [c for c in r.checks if c.status not in (Status.passed, Status.skipped)]
        skipped = [c for c in r.checks if c.status is Status.skipped]
        note = f" ({len(skipped)} skipped: need a GPU)" if skipped else ""
        if bad:
            line(False, str(path.relative_to(root)), f"{_score(r)}: {bad[0].id} {bad[0].status.value}: {bad[0].message[:120]}")
        else:
            line(r.gradable, str(path.relative_to(root)), f"{_score(r)} every check passed{note}")

    r = grader.grade(root / "starter.py")
    passed = [c.id for c in r.checks if c.status is Status.passed]
    if not r.gradable:
        line(False, "starter.py", f"not gradable: {r.error}")
    elif passed or r.score:
        line(False, "starter.py", f"{_score(r)}: should score 0, passed {', '.join(passed)}")
    else:
        line(True, "starter.py", f"{_score(r)} graded without a crash, nothing passed")

    caught: set[str] = set()
    unproven: set[str] = set()
    for path in sorted((root / "wrong").glob("*.py")):
        name = str(path.relative_to(root))
        wanted = expectations(path)
        if not wanted:
            line(False, name, "names no check: add a line '# expect: <check-id>'")
            continue
        r = grader.grade(path)
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
    missing = [cid for cid in manifest.checks if cid not in caught and cid not in unproven]
    if missing:
        line(False, "wrong/", f"no wrong file fails: {', '.join(missing)}")
    else:
        line(True, "wrong/", "every check is failed by at least one wrong file" + (
            f" ({len(unproven)} unproven without a GPU)" if unproven else ""))  # fmt: skip
    return ok
