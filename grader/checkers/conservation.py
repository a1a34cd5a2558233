"""Conservation and bookkeeping: laws an answer must obey whatever order it comes in.

Each rule names outputs (and inputs) of the function and checks one invariant on every case:
a permutation keeps every index exactly once, groups are contiguous with correct offsets, a
distribution sums to one, counts add up. These hold for every valid answer, so they accept
the free orders an oracle comparison would have to special-case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from grader import dims as dimexpr
from grader.api import (
    CheckContext,
    Checker,
    CheckSpec,
    LabManifest,
    Verdict,
    case_set_problems,
    digits_apart,
)

Namespace = Mapping[str, Any]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def arrays(self) -> list[str]:
        """Names of outputs or inputs this rule reads."""
        return []

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        raise NotImplementedError


def _value(expr: str | int, ns: Namespace, dims: Mapping[str, int]) -> int:
    scalars = {k: int(v) for k, v in ns.items() if isinstance(v, (int, np.integer)) and not isinstance(v, bool)}
    return dimexpr.evaluate(expr, {**scalars, **dims})


class Permutation(_Rule):
    """`output` holds every integer 0..length-1 exactly once."""

    rule: Literal["permutation"] = "permutation"
    output: str = Field(description="The output that must be a permutation.")
    length: str | int = Field(description="Expression for the length, e.g. 'T*k'.")

    def arrays(self) -> list[str]:
        return [self.output]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        arr = np.asarray(ns[self.output]).reshape(-1)
        n = _value(self.length, ns, dims)
        if arr.size != n:
            return f"{self.output} has {arr.size} entries, a permutation of 0..{n - 1} has {n}"
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            return f"{self.output} holds {int(arr.min() if arr.min() < 0 else arr.max())}, outside 0..{n - 1}"
        counts = np.bincount(arr.astype(np.int64), minlength=n)
        if np.any(counts != 1):
            dup = np.flatnonzero(counts > 1)
            miss = np.flatnonzero(counts == 0)
            return f"{self.output} is not a permutation: index {int(dup[0])} appears {int(counts[dup[0]])} times, index {int(miss[0])} never"
        return None


class Groups(_Rule):
    """`order` sorts the flattened `keys` into contiguous groups 0..count-1 delimited by `offsets`."""

    rule: Literal["groups"] = "groups"
    order: str = Field(description="The output ordering the items.")
    offsets: str = Field(description="The output with each group's start, plus the end.")
    keys: str = Field(description="The input or output holding each item's group, flattened.")
    count: str | int = Field(description="Expression for the number of groups, e.g. 'num_experts'.")

    def arrays(self) -> list[str]:
        return [self.order, self.offsets, self.keys]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        keys = np.asarray(ns[self.keys]).reshape(-1).astype(np.int64)
        order = np.asarray(ns[self.order]).reshape(-1).astype(np.int64)
        offsets = np.asarray(ns[self.offsets]).reshape(-1).astype(np.int64)
        count = _value(self.count, ns, dims)
        if order.size != keys.size or (order.size and (order.min() < 0 or order.max() >= keys.size)):
            return f"{self.order} does not index the {keys.size} items"
        expected = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=count))])
        if offsets.shape != expected.shape:
            return f"{self.offsets} has {offsets.size} entries, expected {count + 1} (one per group, plus the end)"
        wrong = np.flatnonzero(offsets != expected)
        if wrong.size:
            i = int(wrong[0])
            return f"{self.offsets}[{i}] is {int(offsets[i])}, expected {int(expected[i])} (groups 0..{i - 1} hold {int(expected[i])} items)"
        grouped = keys[order]
        for g in range(count):
            block = grouped[expected[g] : expected[g + 1]]
            if np.any(block != g):
                pos = int(expected[g] + np.flatnonzero(block != g)[0])
                return f"{self.order}[{pos}] lands item {int(order[pos])} of group {int(grouped[pos])} in group {g}'s block"
        return None


class RowsSumTo(_Rule):
    """Every row (last axis) of `output` sums to `value`."""

    rule: Literal["rows_sum_to"] = "rows_sum_to"
    output: str = Field(description="The output whose rows are checked.")
    value: float = Field(default=1.0, description="What every row must sum to.")
    atol: float = Field(default=1e-6, ge=0, description="Allowed absolute error of each row sum.")

    def arrays(self) -> list[str]:
        return [self.output]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        sums = np.asarray(ns[self.output], dtype=np.float64).sum(axis=-1).reshape(-1)
        bad = np.flatnonzero(~(np.abs(sums - self.value) <= self.atol))
        if bad.size:
            got = digits_apart(float(sums[bad[0]]), self.value, 6)
            return f"row {int(bad[0])} of {self.output} sums to {got}, expected {self.value:g} ({bad.size} row(s) off)"
        return None


class NonNegative(_Rule):
    """Every value of `output` is >= 0."""

    rule: Literal["nonnegative"] = "nonnegative"
    output: str = Field(description="The output that must have no negative value.")

    def arrays(self) -> list[str]:
        return [self.output]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        arr = np.asarray(ns[self.output])
        bad = np.argwhere(arr < 0)
        if bad.size:
            idx = tuple(int(i) for i in bad[0])
            return f"{self.output}{list(idx)} is {arr[idx]:.6g}, below 0"
        return None


class DistinctInRows(_Rule):
    """No row of `output` repeats a value."""

    rule: Literal["distinct_in_rows"] = "distinct_in_rows"
    output: str = Field(description="The output whose rows must not repeat a value.")

    def arrays(self) -> list[str]:
        return [self.output]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        arr = np.asarray(ns[self.output])
        rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
        ordered = np.sort(rows, axis=1)
        dup = np.argwhere(ordered[:, 1:] == ordered[:, :-1])
        if dup.size:
            r = int(dup[0][0])
            return f"row {r} of {self.output} repeats {ordered[r, dup[0][1]]}: {rows[r].tolist()}"
        return None


class InRange(_Rule):
    """low <= value < high for every value of `output`."""

    rule: Literal["in_range"] = "in_range"
    output: str = Field(description="The output whose values are bounded.")
    low: str | int = Field(default=0, description="Inclusive lower bound, an expression.")
    high: str | int = Field(description="Exclusive upper bound, an expression such as 'E'.")

    def arrays(self) -> list[str]:
        return [self.output]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        arr = np.asarray(ns[self.output])
        lo, hi = _value(self.low, ns, dims), _value(self.high, ns, dims)
        bad = np.argwhere((arr < lo) | (arr >= hi))
        if bad.size:
            idx = tuple(int(i) for i in bad[0])
            return f"{self.output}{list(idx)} is {arr[idx]}, outside [{lo}, {hi})"
        return None


class SumEquals(_Rule):
    """The values of `output` add up to `value` (exactly for integers)."""

    rule: Literal["sum_equals"] = "sum_equals"
    output: str = Field(description="The output whose values are added up.")
    value: str | int = Field(description="Expression for the total, e.g. 'T*k'.")
    atol: float = Field(default=0.0, ge=0, description="Allowed absolute error of the total.")

    def arrays(self) -> list[str]:
        return [self.output]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        arr = np.asarray(ns[self.output])
        want = _value(self.value, ns, dims)
        total = arr.sum(dtype=np.float64 if np.issubdtype(arr.dtype, np.floating) else np.int64)
        if abs(float(total) - want) > self.atol:
            return f"{self.output} adds up to {digits_apart(float(total), want, 6)}, expected {want} (nothing may be lost or counted twice)"
        return None


class PaddedGroups(_Rule):
    """The layout of moe_align_block_size: assignments grouped by key in ascending order, each
    group padded with the sentinel (the number of items) to a multiple of `block`, one key per block."""

    rule: Literal["padded_groups"] = "padded_groups"
    sorted: str = Field(description="The output holding the grouped, padded item indices.")
    blocks: str = Field(description="The output holding each block's key.")
    total: str = Field(description="The output holding the padded length (only that many entries are read).")
    keys: str = Field(description="The input holding each item's key (flattened).")
    count: str | int = Field(description="Expression for the number of keys, e.g. 'num_experts'.")
    block: str | int = Field(description="Expression for the block size, e.g. 'block_m'.")

    def arrays(self) -> list[str]:
        return [self.sorted, self.blocks, self.total, self.keys]

    def check(self, ns: Namespace, dims: Mapping[str, int]) -> str | None:
        keys = np.asarray(ns[self.keys]).reshape(-1).astype(np.int64)
        sentinel = keys.size
        count, block = _value(self.count, ns, dims), _value(self.block, ns, dims)
        sizes = np.bincount(keys, minlength=count)
        padded = -(-sizes // block) * block
        total = int(np.asarray(ns[self.total]).reshape(-1)[0])
        if total != int(padded.sum()):
            return f"{self.total} is {total}, expected {int(padded.sum())} (every group padded to a multiple of {block})"
        order = np.asarray(ns[self.sorted]).reshape(-1).astype(np.int64)
        owners = np.asarray(ns[self.blocks]).reshape(-1).astype(np.int64)
        if order.size < total or owners.size < total // block:
            return f"{self.sorted} holds {order.size} entries and {self.blocks} {owners.size}: fewer than {total} and {total // block}"
        seen = np.zeros(sentinel, dtype=bool)
        start = 0
        for key in range(count):
            segment = order[start : start + padded[key]]
            real = segment[segment != sentinel]
            if np.any((real < 0) | (real > sentinel)):
                bad = int(real[(real < 0) | (real > sentinel)][0])
                return f"{self.sorted} holds {bad}, neither an item index nor the sentinel {sentinel}"
            if real.size != sizes[key] or np.any(keys[real] != key):
                return f"group {key} ({self.sorted}[{start}:{start + padded[key]}]) should hold its {sizes[key]} items, holds {real.tolist()[:8]}"
            if np.any(seen[real]):
                return f"{self.sorted} lists item {int(real[seen[real]][0])} twice"
            seen[real] = True
            if np.any(owners[start // block : (start + padded[key]) // block] != key):
                return f"{self.blocks}[{start // block}:{(start + padded[key]) // block}] should all be {key}"
            start += padded[key]
        return None


Rule = Annotated[
    Union[Permutation, Groups, RowsSumTo, NonNegative, DistinctInRows, InRange, SumEquals, PaddedGroups],  # noqa: UP007
    Field(discriminator="rule"),
]


class ConservationOptions(CheckSpec):
    """Check bookkeeping laws on every case."""

    kind: Literal["conservation"] = "conservation"
    cases: str = Field(description="The case set (a key of [cases]) to run.")
    rules: list[Rule] = Field(min_length=1, description="The invariants, checked in order on every case.")

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        out = []
        spec = manifest.functions[self.function]
        known = {o.name for o in spec.returns} | set(spec.args)
        out += case_set_problems(manifest, self.cases)
        out += [
            ("function", "a function whose outputs are arrays or scalars (check plain values with a property claim)", f"plain output {o.name!r}")
            for o in spec.returns
            if o.type == "plain"
        ]
        for i, rule in enumerate(self.rules):
            for name in rule.arrays():
                if name not in known:
                    out.append((f"rules[{i}]", f"names among {sorted(known)}", repr(name)))
        return out


class ConservationChecker(Checker):
    """Runs every rule on the submission's outputs for every case."""

    name = "conservation"
    Options = ConservationOptions

    def run(self, check_id: str, check: ConservationOptions, ctx: CheckContext) -> Verdict:
        cases = ctx.cases(check.cases, check_id)
        for case in cases:
            got = ctx.call(check.function, case, check.time_limit_s).values
            namespace = {**case.inputs, **got}
            for rule in check.rules:
                problem = rule.check(namespace, case.dims)
                if problem:
                    return Verdict.failed(f"{case.label}: {problem}")
        rules = ", ".join(r.rule for r in check.rules)
        return Verdict.passed(f"{rules} hold on all {len(cases)} cases")
