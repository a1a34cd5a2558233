"""The checker interface and the context a check runs in.

A checker is a class with a unique ``name`` (the manifest's ``kind``) and an ``Options`` model
(the manifest entry, validated). ``run`` returns a :class:`Verdict`; when the submission itself
fails to answer, the :class:`~grader.sandbox.values.SubmissionFault` it raises is turned into an
``error`` or ``failed`` verdict by the session, so checkers only handle the answers they get.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from grader.manifest import CheckSpec, LabManifest
from grader.results import Mismatch, Status
from grader.sandbox.values import Outputs, SubmissionFault

if TYPE_CHECKING:
    from grader.lab import Case, Lab
    from grader.sandbox.client import Submission
    from grader.seeds import Seeds


@dataclass
class Verdict:
    """What a checker concluded about one check."""

    status: Status
    message: str
    mismatches: list[Mismatch] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    table: list[dict[str, Any]] = field(default_factory=list)
    fraction: float | None = None
    """Partial credit in [0, 1] (e.g. speed relative to the reference); None means all or nothing."""
    margin: float | None = None
    """For a measured requirement (a speed): measured / required - 1, negative when it falls short.
    A failed check of a :class:`TimedCheckSpec` kind within its ``retry_near`` is measured again."""
    hint: str | None = None
    """What to look at, when the check's own hint does not fit why it failed ("" for none)."""
    traceback: str = ""
    """The submission's own traceback, when it raised."""
    deferred: bool = False
    """Skipped for hardware this machine lacks: graded later elsewhere (shown as pending, never failed)."""

    @classmethod
    def passed(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.passed, message, **kw)

    @classmethod
    def failed(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.failed, message, **kw)

    @classmethod
    def skipped(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.skipped, message, **kw)

    @classmethod
    def error(cls, message: str, **kw: Any) -> Verdict:
        return cls(Status.error, message, **kw)


@dataclass
class Finding:
    """What a lab's claim (a property check) may return instead of a message: partial credit and a table."""

    problem: str | None
    """What broke the claim, or None when it holds."""
    message: str = ""
    """What was measured, for a claim that holds (the scorecard's line)."""
    fraction: float | None = None
    """Partial credit in [0, 1] when it does not hold fully; None means all or nothing."""
    table: list[dict[str, Any]] = field(default_factory=list)
    """Rows shown under the check (e.g. prediction against measurement, category by category)."""


class TimedCheckSpec(CheckSpec):
    """Options every timed check has: a measurement that fails close to its requirement is repeated.

    A timing varies between runs and nodes; a failure that close is as likely noise as a verdict."""

    retry_near: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="A failure measured within this fraction of the requirement (0.1: within 10%) is measured "
        "once more in the same grading, on the same node, and the better measurement counts; 0 turns it off.",
    )


class Checker:
    """Base class of checkers. Subclasses set ``name``, ``Options`` and implement ``run``."""

    name: ClassVar[str] = ""
    """The manifest ``kind`` that selects this checker; unique across all plugins."""
    Options: ClassVar[type[CheckSpec]] = CheckSpec
    """The pydantic model of a manifest entry of this kind (a CheckSpec subclass)."""

    def run(self, check_id: str, check: Any, ctx: CheckContext) -> Verdict:
        raise NotImplementedError

    def prepare(self, check_id: str, check: Any, lab: Lab, seeds: Seeds) -> None:
        """Work a GPU check can do before its turn, in the grader's process only (trusted code:
        the lab's, the solution's), possibly in a background thread while other checks run:
        e.g. calibrating the device. Optional; what it computes must be cached where ``run``
        finds it, and ``run`` must not depend on it having happened."""


class CheckContext:
    """Everything a check may use: the lab, its inputs, the reference, and the submission."""

    def __init__(
        self,
        lab: Lab,
        submission: Submission,
        seeds: Seeds,
        device: str = "cpu",
        attempt: int = 0,
    ) -> None:
        self.lab = lab
        self.manifest: LabManifest = lab.manifest
        self.submission = submission
        self.seeds = seeds
        self.device = device
        self.attempt = attempt
        """Which measurement of this check in this grading (0, or 1 for a timed check measured
        again near its requirement): a check that draws inputs for timing draws new ones each time."""

    def rng(self, *key: str | int) -> np.random.Generator:
        """A generator seeded from the grading seed (and its secret part) and ``key``."""
        return self.seeds.rng(*key)

    def cases(self, case_set: str, check_id: str) -> list[Case]:
        """Fresh inputs for one check: the set's fixed cases, then its random ones."""
        return self.lab.cases(case_set, self.seeds, check_id)

    @property
    def torch_device(self) -> str | None:
        return self.device if self.device.startswith("cuda") else None

    def reference(
        self, function: str, case: Case, check_id: str, reference: str | None = None, args: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The trusted outputs on this case (the solution's, or ``lab:<fn>``'s, given the function's
        arguments or the case's inputs ``args``), computed in the grader's process (cached)."""
        return self.lab.reference(
            function, case, key=(check_id, self.seeds.key), device=self.torch_device, reference=reference, names=args
        )

    def call(self, function: str, case: Case, time_limit_s: float | None = None, **kw: Any) -> Outputs:
        """The submission's outputs on this case, validated; raises SubmissionFault naming the case
        (a wrong answer and an error alike: a student must learn which case raised), unless no
        case could have answered (the function is missing, the import failed)."""
        try:
            return self.submission.call(function, case.inputs, case.dims, time_limit_s, **kw)
        except SubmissionFault as fault:
            if not self.submission.defines(function) or fault.hint is None and fault.status is Status.error:
                raise  # no case could have answered, or none would (not implemented yet): no case to name
            raise SubmissionFault(fault.status, f"{case.label}: {fault.message}", fault.traceback, fault.hint) from None

    def claim_probe(self, check_id: str, time_limit_s: float | None) -> Probe:
        return Probe(self, check_id, time_limit_s)


class Probe:
    """What a lab's claim function gets: calls into the submission and the reference."""

    def __init__(self, ctx: CheckContext, check_id: str, time_limit_s: float | None) -> None:
        self._ctx = ctx
        self._check_id = check_id
        self._limit = time_limit_s
        self.calls = 0

    def submission(
        self, function: str, inputs: Mapping[str, Any], dims: Mapping[str, int] | None = None
    ) -> dict[str, np.ndarray]:
        """Call the submission; outputs by name. Raises SubmissionFault like any call."""
        self.calls += 1
        return self._ctx.submission.call(function, inputs, dims, self._limit).values

    def reference(self, function: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Call the solution in the grader's process; outputs by name."""
        return self._ctx.lab.call_solution(function, inputs, self._ctx.torch_device)

    @property
    def device(self) -> str:
        return self._ctx.device
