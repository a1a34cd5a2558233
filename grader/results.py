"""The result model: what one grading produced, as plain data.

Every reporter and every LMS payload is rendered from :class:`GradeResult`; nothing
is graded twice. The field names of ``result.json`` are part of the contract in
SPEC.md, so fields are only ever added, never renamed.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Status(str, Enum):
    """How a check ended."""

    passed = "passed"
    failed = "failed"
    """The submission answered, and the answer was wrong."""
    error = "error"
    """The submission raised, hung, crashed, ran out of a resource or broke a rule."""
    skipped = "skipped"
    """Hardware or a prerequisite is missing; the message says which."""


class Visibility(str, Enum):
    """When a student may see a check (Gradescope's vocabulary)."""

    visible = "visible"
    after_due_date = "after_due_date"
    after_published = "after_published"
    hidden = "hidden"


class Problem(str, Enum):
    """Why a result is not gradable: the upload itself, or the grader."""

    submission = "submission"
    """Nothing to grade: no file, several candidates, a syntax error, an unreadable notebook."""
    infrastructure = "infrastructure"
    """The grader could not grade: no sandbox, a broken lab, a grader bug."""


class Mismatch(BaseModel):
    """One element where the submission and the reference disagree."""

    model_config = ConfigDict(extra="forbid")

    where: str = Field(description="Which output and index, e.g. 'topk_weights[3, 1]'.")
    expected: str
    got: str


class LeaderboardEntry(BaseModel):
    """One measured number a check publishes (Gradescope's leaderboard columns)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    value: float
    order: Literal["asc", "desc"] = "desc"


class CheckResult(BaseModel):
    """The verdict of one check."""

    model_config = ConfigDict(extra="forbid")

    id: str
    title: str
    function: str
    kind: str
    status: Status
    score: float
    max_score: float
    message: str
    visibility: Visibility = Visibility.visible
    duration_s: float = 0.0
    hint: str = Field(default="", description="What to look at when the check does not pass.")
    mismatches: list[Mismatch] = Field(
        default_factory=list, description="The first disagreements, for failed oracle checks."
    )
    details: dict[str, str | float | int | None] = Field(
        default_factory=dict, description="Measured numbers a reporter may show (times, ratios)."
    )
    table: list[dict[str, str | float | int | None]] = Field(
        default_factory=list, description="A table to show under the check (e.g. a kernel table)."
    )
    traceback: str = Field(default="", description="The submission's own frames, when it raised.")
    deferred: bool = Field(
        default=False, description="Skipped here because it needs hardware this machine lacks; graded later elsewhere."
    )
    leaderboard: list[LeaderboardEntry] = Field(
        default_factory=list, description="Measured numbers this check publishes to a leaderboard."
    )


class Environment(BaseModel):
    """Versions of everything that could change a verdict."""

    grader: str
    python: str
    numpy: str | None = None
    torch: str | None = None
    triton: str | None = None
    gpu: str | None = Field(default=None, description="The GPU model that graded; None when no GPU was used.")
    platform: str | None = None
    plugins: dict[str, str] = Field(default_factory=dict)
    node: str | None = Field(default=None, description="The host that graded (its host name).")
    job: str | None = Field(default=None, description="The batch-system job that graded, e.g. 'slurm 1234_5'.")
    gpu_driver: str | None = Field(default=None, description="The NVIDIA driver version; None when no GPU was used.")
    gpu_uuid: str | None = Field(default=None, description="Which physical GPU graded; None when no GPU was used.")
    gpu_clocks_mhz: dict[str, int] | None = Field(
        default=None,
        description="Clocks when the grading ended: 'sm', 'memory' and their maxima 'sm_max', 'memory_max'; "
        "None when no GPU was used or none could be read.",
    )


class Guarantee(BaseModel):
    """One property of the isolation, held or missing, and the mechanism (or the reason)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="e.g. 'network', 'solutions', 'memory'.")
    held: bool
    how: str = Field(description="The mechanism that holds it, or why it is missing and what the operator can do.")


class SandboxInfo(BaseModel):
    """How the submission was isolated, and what was missing."""

    mode: str
    degraded: bool = False
    warnings: list[str] = Field(default_factory=list)
    official_ok: bool | None = Field(
        default=None,
        description="Whether this tier keeps the solutions, the secret seed and the network out of the submission's reach "
        "(what official grading requires). None where no worker was started.",
    )
    guarantees: list[Guarantee] = Field(default_factory=list, description="Each guarantee of the tier, held or missing.")


class GradeResult(BaseModel):
    """One grading of one submission: the content of ``result.json``."""

    exercise: str
    submission: str
    submission_sha256: str
    score: float
    max_score: float
    gradable: bool = True
    checks: list[CheckResult] = Field(default_factory=list)
    environment: Environment
    sandbox: SandboxInfo
    seed: int | None = Field(default=None, description="The public seed; a secret part may be mixed in.")
    official: bool = Field(default=False, description="Graded with the secret seed component.")
    error: str | None = Field(default=None, description="Why the result is not gradable.")
    problem: Problem | None = Field(default=None, description="Whose problem made it not gradable.")
    helper_files: list[str] = Field(
        default_factory=list, description="Other files of the upload the graded file may import (not graded themselves)."
    )
    submission_output: str = Field(default="", description="The tail of what the submission printed.")
    duration_s: float = 0.0
    started_at: str | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score if self.max_score else 0.0

    def counts(self) -> dict[Status, int]:
        out = {s: 0 for s in Status}
        for c in self.checks:
            out[c.status] += 1
        return out
