"""Oracle equivalence: the submission's outputs equal the solution's on the same fresh inputs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from grader.api import (
    CheckContext,
    Checker,
    CheckSpec,
    LabManifest,
    Verdict,
    case_set_problems,
    compare,
    sort_rows,
    tolerance_problems,
)


class OracleOptions(CheckSpec):
    """Compare every output with the reference solution's, case by case."""

    kind: Literal["oracle"] = "oracle"
    cases: str = Field(description="The case set (a key of [cases]) to run.")
    reference: str | None = Field(
        default=None,
        description="The trusted function to compare with: a solution function, or 'lab:<name>' from lab.py; defaults to `function`.",
    )
    reference_args: list[str] | None = Field(
        default=None,
        description="The case's inputs the reference receives, by name, when it needs more than the submission gets "
        "(e.g. the unquantised weights that the quantised arguments came from); defaults to the function's arguments.",
    )
    tolerance: dict[str, str] = Field(
        default_factory=dict,
        description="Tolerance name per output; integer outputs default to 'exact', float ones to 'default'.",
    )
    unordered_rows_by: str | None = Field(
        default=None,
        description="An output whose rows may come in any order; every output of the same shape is reordered with it.",
    )

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        out = []
        spec = manifest.functions[self.function]
        names = {o.name for o in spec.returns}
        out += case_set_problems(manifest, self.cases)
        if self.reference_args is not None and not (self.reference or "").startswith("lab:"):
            out.append(("reference_args", "a 'lab:<function>' reference to receive them", repr(self.reference)))
        out += [
            ("function", "a function whose outputs are arrays or scalars (check plain values with a property claim)", f"plain output {o.name!r}")
            for o in spec.returns
            if o.type == "plain"
        ]
        if self.reference is not None and not self.reference.startswith("lab:") and self.reference not in manifest.functions:
            out.append(("reference", f"one of {sorted(manifest.functions)} or 'lab:<function>'", repr(self.reference)))
        for output, tol in self.tolerance.items():
            if output not in names:
                out.append((f"tolerance.{output}", f"an output of {self.function}: {sorted(names)}", repr(output)))
            out += tolerance_problems(manifest, tol, f"tolerance.{output}")
        needs_default = any(o.dtype not in ("int", "bool") and o.name not in self.tolerance for o in spec.returns)
        if needs_default and "default" not in manifest.tolerances:
            out.append(("tolerance", "a [tolerances.default] for the float outputs, or a tolerance per output", "none"))
        if self.unordered_rows_by is not None and self.unordered_rows_by not in names:
            out.append(("unordered_rows_by", f"an output of {self.function}: {sorted(names)}", repr(self.unordered_rows_by)))
        return out


class OracleChecker(Checker):
    """Runs the check's cases through the submission and the solution and compares outputs."""

    name = "oracle"
    Options = OracleOptions

    def run(self, check_id: str, check: OracleOptions, ctx: CheckContext) -> Verdict:
        spec = ctx.manifest.functions[check.function]
        cases = ctx.cases(check.cases, check_id)
        for case in cases:
            expected = ctx.reference(check.function, case, check_id, check.reference, check.reference_args)
            got = ctx.call(check.function, case, check.time_limit_s).values
            if check.unordered_rows_by:
                key = check.unordered_rows_by
                others = [o.name for o in spec.returns if o.name != key]
                exp_sorted = sort_rows(expected[key], *(expected[n] for n in others))
                got_sorted = sort_rows(got[key], *(got[n] for n in others))
                expected = dict(zip([key, *others], exp_sorted))
                got = dict(zip([key, *others], got_sorted))
            for out in spec.returns:
                default = "exact" if out.dtype in ("int", "bool") else "default"
                tol = ctx.manifest.tolerance(check.tolerance.get(out.name, default))
                result = compare(out.name, expected[out.name], got[out.name], tol)
                if not result.ok:
                    note = " (rows compared after sorting by " + check.unordered_rows_by + ")" if check.unordered_rows_by else ""
                    return Verdict.failed(f"{case.label}: {result.message}{note}", mismatches=result.mismatches)
        return Verdict.passed(f"matches the reference on all {len(cases)} cases")
