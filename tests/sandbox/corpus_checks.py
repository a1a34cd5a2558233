"""What each file of the hostile corpus (``corpus/``) must get, and the checks some need after
grading: shared by test_corpus.py (the full corpus) and test_environments.py (a subset in each
emulated environment).

Every file states, in ``# verdict:`` lines, the status (or statuses, ``passed|failed`` for a
timing either may give; and a fragment of the message) each check must end with (``*`` for the
checks not named) and, in ``# max-score:``, the most it may score. Optional lines: ``# hidden:``
check ids graded as hidden in that file's copy of the lab (which also publishes the speed
check's number on the leaderboard), ``# graded-as:`` the name the file is uploaded under.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from markdown_it import MarkdownIt

from grader.lms.gradescope import GradescopeFormat
from grader.reporters.markdown import MarkdownReporter
from grader.results import GradeResult, Visibility
from grader.sandbox.uids import configured_range, leased

CORPUS = Path(__file__).resolve().parent / "corpus"
STATUS = "(?:passed|failed|error|skipped)"
VERDICT = re.compile(rf'^# verdict: (\S+) ({STATUS}(?:\|{STATUS})*)(?: "(.*)")?\s*$', re.M)
MAX_SCORE = re.compile(r"^# max-score: ([0-9.]+)\s*$", re.M)
HIDDEN = re.compile(r"^# hidden: (.+)$", re.M)
GRADED_AS = re.compile(r"^# graded-as: (.+)$", re.M)
SECRET = "corpus-secret-7f3a"


def expectations(path: Path) -> tuple[dict[str, tuple[str, str]], float]:
    text = path.read_text()
    verdicts = {cid: (status, fragment or "") for cid, status, fragment in VERDICT.findall(text)}
    match = MAX_SCORE.search(text)
    assert "*" in verdicts or verdicts, f"{path.name} states no verdicts"
    assert match, f"{path.name} states no max-score"
    return verdicts, float(match.group(1))


def hidden(path: Path) -> tuple[str, ...]:
    """The checks graded as hidden in this file's copy of the lab (none: the lab as it is)."""
    match = HIDDEN.search(path.read_text())
    return tuple(match.group(1).split()) if match else ()


def graded_as(path: Path) -> str:
    """The name the file is uploaded under."""
    match = GRADED_AS.search(path.read_text())
    return match.group(1).strip() if match else path.name


def lab_edit(text: str, hidden_checks: tuple[str, ...]) -> str:
    """A manifest with ``hidden_checks`` hidden, and the speed check's number on the leaderboard."""
    for cid in hidden_checks:
        text, n = re.subn(rf"^\[checks\.{re.escape(cid)}\]$", f'[checks.{cid}]\nvisibility = "hidden"', text, flags=re.M)
        assert n == 1, f"no check {cid} in the lab"
    if hidden_checks:
        text = text.replace("[checks.grouped-is-faster]\n", '[checks.grouped-is-faster]\nleaderboard = { speedup = "desc" }\n')
    return text


def matches(status: str, expected: str) -> bool:
    return status in expected.split("|")


UPLOADS = CORPUS / "uploads"
"""Multi-file uploads, one folder each: the graded file (the one with ``# verdict:`` lines) names
its lab (``# lab:``) and files to make from the lab's solution (``# helper-from-solution: NAME``)."""


def upload(folder: Path, into: Path, labs: Path) -> tuple[Path, Path]:
    """Lay the upload in ``folder`` out in ``into``: (the graded file, its lab)."""
    shutil.copytree(folder, into, ignore=shutil.ignore_patterns("__pycache__"))
    main = next(p for p in sorted(into.rglob("*.py")) if VERDICT.search(p.read_text()))
    text = main.read_text()
    lab_id = re.search(r"^# lab: (\S+)", text, re.M).group(1)
    lab = next(labs.glob(f"*/{lab_id}"))
    for name in re.findall(r"^# helper-from-solution: (\S+)$", text, re.M):
        shutil.copyfile(lab / "solution.py", main.parent / name)
    return main, lab



def _no_slot_processes(result: GradeResult) -> None:
    """No process may outlive its grading: a live process of a worker uid that no grading holds
    a lease on is a survivor (uids still leased belong to gradings running right now)."""
    survivors = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
            uid_line = next(line for line in lines if line.startswith("Uid:"))
            state = next(line for line in lines if line.startswith("State:")).split()[1]
        except (OSError, StopIteration):
            continue
        if state in ("Z", "X"):
            continue  # dead already, waiting for its parent (init, by now) to collect it
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


def _tmp_bounded(result: GradeResult) -> None:
    """At most the corpus lab's 1 GiB budget in the private /tmp (or the worker was killed first)."""
    message = next(c.message for c in result.checks if c.id == "expert-mlp-matches-reference")
    match = re.search(r"tmp holds (\d+) MiB", message)
    assert match is None or int(match.group(1)) <= 1024, message


def _hidden_stays_hidden(result: GradeResult) -> None:
    """Nothing a hidden check measured reaches Gradescope's public leaderboard."""
    payload = GradescopeFormat().payload(result)
    hidden_ids = {c.id for c in result.checks if c.visibility is not Visibility.visible}
    assert any(c.leaderboard for c in result.checks if c.id in hidden_ids), "the speed check measured nothing to publish"
    assert not [e for e in payload.get("leaderboard", []) if e["name"].split(":")[0] in hidden_ids], payload["leaderboard"]


def _renders_as_text(result: GradeResult) -> None:
    """scorecard.md and every Markdown field of Gradescope's results.json, rendered as CommonMark
    with GitHub's tables, hold no link, image or HTML that the upload's name (or output) made."""
    renderer = MarkdownIt("commonmark").enable("table")
    payload = GradescopeFormat().payload(result)
    for text in (MarkdownReporter().render(result), payload["output"], *(t["output"] for t in payload["tests"])):
        html = renderer.render(text)
        assert "<a " not in html and "<img" not in html and "<script" not in html, html
    assert "Submission <code>" in renderer.render(MarkdownReporter().render(result))


def _measured_every_round(result: GradeResult) -> None:
    """The later rounds were no faster than the first: answers remembered from the first round's
    inputs would have made them hundreds of times faster. (Whether the file passes or fails is
    the machine's: it paces itself at about 3x where 4x is needed, and outside load moves a
    measured ratio; more rounds are measured unless the first round is clearly passing.)"""
    details = next(c.details for c in result.checks if c.id == "grouped-is-faster")
    assert details["rounds"] > 1 or details["first_round_speedup"] >= details["required"] * 1.25, details
    assert details["speedup"] < 2 * details["first_round_speedup"], details


POST: dict[str, Callable[[GradeResult], None]] = {
    "remembers_timed_answers.py": _measured_every_round,
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
    "fills_tmp_with_files.py": _tmp_bounded,
    "hidden_inputs_through_visible_checks.py": _hidden_stays_hidden,
    "markdown_in_its_name.py": _renders_as_text,
}
