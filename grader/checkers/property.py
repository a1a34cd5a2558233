"""Property checks: a lab's claims, written as functions in its ``lab.py``.

A claim is ``claim(probe, rng, **params) -> str | None``: it calls the submission (and, if it
wants, the reference) through ``probe`` on inputs it draws from ``rng``, and returns ``None``
when the claim holds or a message saying what broke it. A claim that measures how well rather
than whether (an accuracy, scored linearly between two bounds) returns a :class:`Finding`
instead: partial credit, and a table for the scorecard. Claims run in the grader's process;
only the submission's functions cross the boundary.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from grader.api import (
    CheckContext,
    Checker,
    CheckSpec,
    Finding,
    LabManifest,
    Verdict,
    support_function_problems,
)


class PropertyOptions(CheckSpec):
    """Check a claim from lab.py on fresh random draws."""

    kind: Literal["property"] = "property"
    claim: str = Field(description="The claim function in lab.py.")
    trials: int = Field(default=3, ge=1, description="Independent draws; every one must hold.")
    params: dict[str, Any] = Field(default_factory=dict, description="Constants passed to the claim.")

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        return support_function_problems(manifest, self.claim, "claim")


class PropertyChecker(Checker):
    """Runs a claim ``trials`` times with independent seeds."""

    name = "property"
    Options = PropertyOptions

    def run(self, check_id: str, check: PropertyOptions, ctx: CheckContext) -> Verdict:
        claim = ctx.lab.support_function(check.claim)
        probe = ctx.claim_probe(check_id, check.time_limit_s)
        notes: list[str] = []
        table: list[dict[str, Any]] = []
        for trial in range(check.trials):
            found = claim(probe, ctx.rng(check_id, "trial", trial), **check.params)
            if isinstance(found, Finding):
                table += found.table
                if found.problem:
                    where = f"trial {trial + 1} of {check.trials}: " if check.trials > 1 else ""
                    fraction = None if found.fraction is None else min(1.0, max(0.0, found.fraction))
                    return Verdict.failed(where + found.problem, fraction=fraction, table=table)
                if found.message:
                    notes.append(found.message)
            elif found:
                return Verdict.failed(f"trial {trial + 1} of {check.trials}: {found}", table=table)
        summary = "; ".join(notes) if notes else f"holds on {check.trials} independent draw(s) ({probe.calls} calls)"
        return Verdict.passed(summary, table=table)
