"""A timed check that fails close to its requirement is measured once more; nothing else is."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field
from support import LAB01

from grader import hookimpl, plugins
from grader.checkers.base import CheckContext, Checker, TimedCheckSpec, Verdict
from grader.lab import Lab
from grader.manifest import CheckSpec, load_manifest
from grader.session import Grader, GradingOptions


class ScriptedOptions(TimedCheckSpec):
    kind: Literal["scripted-speed"] = "scripted-speed"
    margins: list[float] = Field(description="What each measurement gives: measured / required - 1.")


class ScriptedSpeed(Checker):
    """A stand-in for a timing: the n-th run of a check reports the n-th scripted margin."""

    name = "scripted-speed"
    Options = ScriptedOptions
    runs: ClassVar[dict[str, int]] = {}

    def run(self, check_id: str, check: Any, ctx: CheckContext) -> Verdict:
        n = self.runs.get(check_id, 0)
        self.runs[check_id] = n + 1
        margin = check.margins[n]
        status = Verdict.passed if margin >= 0 else Verdict.failed
        return status(f"run {n + 1}: {margin:+.0%} against the requirement", margin=margin)


class UntimedOptions(CheckSpec):
    kind: Literal["untimed-margin"] = "untimed-margin"


class UntimedMargin(Checker):
    """Not a timed kind: a margin alone must not buy a second try."""

    name = "untimed-margin"
    Options = UntimedOptions
    runs: ClassVar[int] = 0

    def run(self, check_id: str, check: Any, ctx: CheckContext) -> Verdict:
        UntimedMargin.runs += 1
        return Verdict.failed("just short", margin=-0.01)


def _registry() -> plugins.Plugins:
    module = ModuleType("scripted_plugin")
    module.grader_register_checkers = hookimpl(lambda: [ScriptedSpeed, UntimedMargin])  # type: ignore[attr-defined]
    return plugins.build(autoload=False, extra=[module])


CHECKS = {
    "near-then-pass": ([-0.05, 0.02], None),
    "far-miss": ([-0.3, 0.5], None),
    "near-twice": ([-0.05, -0.08], None),
    "switched-off": ([-0.01, 0.5], 0),
    "wide-margin": ([-0.3, 0.5], 0.5),
    "passes": ([0.2, -1.0], None),
}


def _lab(make_lab) -> Path:
    text = ""
    for cid, (margins, near) in CHECKS.items():
        text += textwrap.dedent(
            f"""
            [checks.{cid}]
            kind = "scripted-speed"
            title = "{cid}"
            function = "expert_mlp"
            points = 0
            margins = {margins}
            """
        ) + (f"retry_near = {near}\n" if near is not None else "")
    text += '\n[checks.untimed]\nkind = "untimed-margin"\ntitle = "untimed"\nfunction = "expert_mlp"\npoints = 0\n'
    return make_lab(edit=lambda manifest: manifest + text)


def test_only_a_near_miss_of_a_timed_check_is_measured_again(make_lab) -> None:
    registry = _registry()
    manifest = load_manifest(_lab(make_lab), registry.checkers())
    ScriptedSpeed.runs.clear()
    UntimedMargin.runs = 0

    result = Grader(Lab(manifest), GradingOptions(), registry).grade(LAB01 / "solution.py")
    checks = {c.id: c for c in result.checks}

    assert ScriptedSpeed.runs == {
        "near-then-pass": 2, "far-miss": 1, "near-twice": 2, "switched-off": 1, "wide-margin": 2, "passes": 1,
    }  # fmt: skip
    assert UntimedMargin.runs == 1 and checks["untimed"].status.value == "failed"

    near = checks["near-then-pass"]
    assert near.status.value == "passed" and near.message.startswith("run 2: +2%")
    assert "measured twice: the first measurement fell 5.0% short of the requirement (within retry_near = 0.1)" in near.message
    assert near.details == {"measurements": 2, "first_margin": -0.05}

    twice = checks["near-twice"]  # both short: the closer one counts
    assert twice.status.value == "failed" and twice.message.startswith("run 1: -5%")
    assert twice.details["measurements"] == 2

    assert checks["far-miss"].status.value == "failed" and "measured twice" not in checks["far-miss"].message
    assert checks["switched-off"].status.value == "failed" and "measured twice" not in checks["switched-off"].message
    assert checks["wide-margin"].status.value == "passed" and "retry_near = 0.5" in checks["wide-margin"].message
    assert checks["passes"].status.value == "passed" and "measured twice" not in checks["passes"].message


@pytest.mark.parametrize(("near", "measured"), [(0.999, 2), (0.5, 1)])
def test_cpu_speedup_reports_its_margin(make_lab, near: float, measured: int) -> None:
    """lab-01's timed check against an unreachable 1000x: about -99%, so retried only within 0.999."""

    def edit(text: str) -> str:
        text = re.sub(r"(\[checks\.grouped-is-faster\][^\[]*?)min_speedup = 4\.0", r"\g<1>min_speedup = 1000.0", text, flags=re.S)
        return text.replace("baseline = \"moe_forward_reference\"\n", f"baseline = \"moe_forward_reference\"\nretry_near = {near}\n", 1)

    lab = make_lab(edit=edit)
    registry = plugins.default()
    manifest = load_manifest(lab, registry.checkers())
    result = Grader(Lab(manifest), GradingOptions(), registry).grade(LAB01 / "solution.py")
    check = next(c for c in result.checks if c.id == "grouped-is-faster")
    assert check.status.value == "failed" and "1000x needed" in check.message
    assert check.details.get("measurements", 1) == measured
    if measured == 2:
        assert -1 < float(check.details["first_margin"]) < -0.95
