"""The result model: what one grading produced, as plain data.

Every reporter and every LMS payload is rendered from :class:`GradeResult`; nothing
is graded twice. The field names of ``result.json`` are part of the contract in
SPEC.md, so fields are only ever added, never renamed.
"""

from __future__ import annotations

from enum import Enum

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
    hidden = "hidden"


class Mismatch(BaseModel):
    """One element where the submission and the reference disagree."""

    model_config = ConfigDict(extra="forbid")

    where: str = Field(description="Which output and index, e.g. 'topk_weights[3, 1]'.")
    expected: str
    got: str


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


class Environment(BaseModel):
    """Versions of everything that could change a verdict."""

    grader: str
    python: str
    numpy: str | None = None
    torch: str | None = None
    triton: str | None = None
    gpu: str | None = None
    platform: str | None = None
    plugins: dict[str, str] = Field(default_factory=dict)


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
