"""Fixtures for the LMS tests: a synthetic result with every status and visibility."""

from __future__ import annotations

import pytest

from grader.results import (
    CheckResult,
    Environment,
    GradeResult,
    LeaderboardEntry,
    Mismatch,
    SandboxInfo,
    Status,
    Visibility,
)


def _check(cid: str, status: Status, score: float, max_score: float, visibility: Visibility, message: str, **kw) -> CheckResult:
    return CheckResult(
        id=cid, title=f"the {cid} check", function="route", kind="oracle", status=status, score=score,
        max_score=max_score, message=message, visibility=visibility, duration_s=0.25, hint="look at the top-k",
        mismatches=[Mismatch(where="topk_ids[0, 1]", expected="3", got="5")] if status is Status.failed else [], **kw,
    )  # fmt: skip


@pytest.fixture
def synthetic() -> GradeResult:
    """7.5 / 10: one check per status, every visibility, a pending GPU check and a leaderboard number."""
    return GradeResult(
        exercise="lab-01-moe-routing",
        submission="starter.py",
        submission_sha256="0" * 64,
        score=7.5,
        max_score=10.0,
        checks=[
            _check("a-passes", Status.passed, 4.0, 4.0, Visibility.visible, "matches the reference",
                   leaderboard=[LeaderboardEntry(name="speedup", value=7.25, order="desc")]),  # fmt: skip
            _check("b-fails", Status.failed, 0.0, 1.0, Visibility.visible, "case 2 of 11: topk_ids differ"),
            _check("c-errors", Status.error, 0.0, 1.0, Visibility.after_due_date, "route raised ValueError: boom"),
            _check("d-pending", Status.skipped, 0.0, 0.5, Visibility.visible, "pending: needs a CUDA GPU", deferred=True),
            _check("e-hidden", Status.passed, 3.5, 3.5, Visibility.hidden, "secret cases pass",
                   leaderboard=[LeaderboardEntry(name="speedup", value=9.5, order="desc")]),  # fmt: skip
        ],
        environment=Environment(grader="0.1.0", python="3.11"),
        sandbox=SandboxInfo(mode="bubblewrap"),
        submission_output='{"score": 10}\nprinted by the student\n',
        duration_s=1.5,
    )
