"""Property checks: a lab's claims, written as functions in its ``lab.py``.

A claim is ``claim(probe, rng, **params) -> str | None``: it calls the submission (and, if it
wants, the reference) through ``probe`` on inputs it draws from ``rng``, and returns ``None``
when the claim holds or a message saying what broke it. Claims run in the grader's process;
only the submission's functions cross the boundary.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from grader.api import (
    CheckContext,
    Checker,
    CheckSpec,
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
        for trial in range(check.trials):
            problem = claim(probe, ctx.rng(check_id, "trial", trial), **check.params)
            if problem:
                return Verdict.failed(f"trial {trial + 1} of {check.trials}: {problem}")
        return Verdict.passed(f"holds on {check.trials} independent draw(s) ({probe.calls} calls)")
