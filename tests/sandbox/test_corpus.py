"""The adversarial corpus: hostile lab-01 submissions, each with the verdict it must get.

Every file in ``corpus/`` states, in ``# verdict:`` lines, the status (and a fragment of the
message) each check must end with (``*`` for the checks not named) and, in ``# max-score:``,
the most it may score. Each is graded through the real sandbox with short time limits; the
grading must finish, stay gradable, and never credit the attack.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import GradeResult
from grader.sandbox.launchers import probe
from grader.sandbox.uids import configured_range, leased
from grader.session import Grader
from support import LAB01, tight_limits

CORPUS = Path(__file__).resolve().parent / "corpus"
VERDICT = re.compile(r'^# verdict: (\S+) (passed|failed|error|skipped)(?: "(.*)")?\s*$', re.M)
MAX_SCORE = re.compile(r"^# max-score: ([0-9.]+)\s*$", re.M)
SECRET = "corpus-secret-7f3a"


def expectations(path: Path) -> tuple[dict[str, tuple[str, str]], float]:
    text = path.read_text()
    verdicts = {cid: (status, fragment or "") for cid, status, fragment in VERDICT.findall(text)}
    match = MAX_SCORE.search(text)
    assert "*" in verdicts or verdicts, f"{path.name} states no verdicts"
    assert match, f"{path.name} states no max-score"
    return verdicts, float(match.group(1))


@pytest.fixture(scope="module")
def corpus_grader(tmp_path_factory: pytest.TempPathFactory) -> Grader:
    if probe().mode != "bubblewrap":
        pytest.skip(f"the corpus needs full isolation; this machine runs '{probe().mode}'")
    root = tmp_path_factory.mktemp("corpus-lab")
    lab_dir = root / LAB01.name
    shutil.copytree(LAB01, lab_dir, ignore=shutil.ignore_patterns("__pycache__"))
    manifest_path = lab_dir / "manifest.toml"
    # A 1 GiB budget: what a submission may hold across all its processes (memory_across_processes.py).
    manifest_path.write_text(tight_limits(manifest_path.read_text()) + "\n[lab.worker]\nmemory_mb = 1024\n")
    manifest = load_manifest(lab_dir, default_plugins().checkers())
    old = os.environ.get("GRADER_SECRET_SEED")
    os.environ["GRADER_SECRET_SEED"] = SECRET
    try:
        yield Grader(manifest)
    finally:
        if old is None:
            os.environ.pop("GRADER_SECRET_SEED", None)
        else:
            os.environ["GRADER_SECRET_SEED"] = old


def _no_slot_processes(result: GradeResult) -> None:
    """No process may outlive its grading: a live process of a worker uid that no grading holds
    a lease on is a survivor (uids still leased belong to gradings running right now)."""
    survivors = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        uid = int(uid_line.split()[1])
        first, last = configured_range()
        if first <= uid <= last and not leased(uid):
            survivors.append(f"{status.parent.name} (uid {uid})")
    assert not survivors, f"processes of a worker's uid survived grading: {survivors}"


def _sanitised_output(result: GradeResult) -> None:
    assert "\x1b" not in result.submission_output and "\r" not in result.submission_output
    assert "\x07" not in result.submission_output
    assert len(result.submission_output) <= 4000


def _planted_nothing(result: GradeResult) -> None:
    assert not Path("/autograder/results/results.json").exists()
    assert not Path("/grade/results/results.json").exists()


def _never_unpickled(result: GradeResult) -> None:
    assert not Path("/tmp/grader-was-unpickled").exists()


def _no_secret(result: GradeResult) -> None:
    message = next(c.message for c in result.checks if c.id == "expert-mlp-matches-reference")
    assert "env=[]" in message and "secret_in=[]" in message, message
    assert SECRET not in message


def _escapes_refused(result: GradeResult) -> None:
    message = next(c.message for c in result.checks if c.id == "expert-mlp-matches-reference")
    assert "=ok" not in message, message
    assert "as uid 0" not in message, message


def _offline(result: GradeResult) -> None:
    message = next(c.message for c in result.checks if c.id == "expert-mlp-matches-reference")
    assert "reached" not in message, message


def _only_unix_sockets(result: GradeResult) -> None:
    message = next(c.message for c in result.checks if c.id == "expert-mlp-matches-reference")
    assert "unix=opened" in message, message
    assert message.count("=opened") == 1, message


def _no_shared_memory(result: GradeResult) -> None:
    message = next(c.message for c in result.checks if c.id == "expert-mlp-matches-reference")
    assert "=held" not in message and message.count("=E") == 4, message
    assert not Path("/dev/shm/grader-corpus-hold").exists()


POST: dict[str, Callable[[GradeResult], None]] = {
    "daemon_keeps_pipe.py": _no_slot_processes,
    "fork_bomb.py": _no_slot_processes,
    "thread_bomb.py": _no_slot_processes,
    "terminal_escape_flood.py": _sanitised_output,
    "writes_report_files.py": _planted_nothing,
    "lazy_and_pickled_objects.py": _never_unpickled,
    "snoops_environment.py": _no_secret,
    "escape_attempts.py": _escapes_refused,
    "network_access.py": _offline,
    "sockets_beyond_unix.py": _only_unix_sockets,
    "shared_memory.py": _no_shared_memory,
    "memory_across_processes.py": _no_slot_processes,
    "starves_the_baseline.py": _no_slot_processes,
}


def test_corpus_is_large_enough() -> None:
    assert len(list(CORPUS.glob("*.py"))) >= 30


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.py")), ids=lambda p: p.stem)
def test_hostile_submission_gets_its_verdict(path: Path, corpus_grader: Grader) -> None:
    verdicts, max_score = expectations(path)
    started = time.monotonic()
    result = corpus_grader.grade(path)
    elapsed = time.monotonic() - started
    assert result.gradable, result.error
    for check in result.checks:
        status, fragment = verdicts.get(check.id) or verdicts["*"]
        assert check.status.value == status, f"{check.id}: {check.status.value} ({check.message}), expected {status}"
        assert fragment in check.message, f"{check.id}: {check.message!r} lacks {fragment!r}"
    assert result.score <= max_score, f"scored {result.score}, at most {max_score} allowed"
    assert elapsed < 60, f"grading took {elapsed:.1f} s"
    if path.name in POST:
        POST[path.name](result)
