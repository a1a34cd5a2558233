"""Comparison and conservation rules, on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from grader.checkers.compare import compare, sort_rows
from grader.checkers.conservation import DistinctInRows, Groups, InRange, NonNegative, Permutation, RowsSumTo, SumEquals
from grader.manifest import Tolerance

TOL = Tolerance(rtol=1e-4, atol=1e-6)
EXACT = Tolerance(rtol=0, atol=0)


def test_close_values_pass_and_far_ones_fail_with_first_mismatches() -> None:
    expected = np.linspace(-1, 1, 12).reshape(3, 4)
    assert compare("out", expected, expected * (1 + 5e-5), TOL).ok
    got = expected.copy()
    got[1, 2] += 0.1
    got[2, 3] = 7
    result = compare("out", expected, got, TOL)
    assert not result.ok
    assert "2 of 12 float64 value(s) differ" in result.message and "first at out[1, 2]" in result.message
    assert [m.where for m in result.mismatches] == ["out[1, 2]", "out[2, 3]"]
    assert result.mismatches[1].got == "7"


def test_a_mismatch_names_the_dtype_and_shows_the_digits_that_differ() -> None:
    expected = np.full(4, 0.1, dtype=np.float16)
    got = expected.copy()
    got[2] = np.float16(0.1001)  # the next float16 after 0.1: the same at 4 digits
    result = compare("out", expected, got, EXACT)
    assert "1 of 4 float16 value(s) differ from the reference (exactly)" in result.message, result.message
    assert result.mismatches[0].expected != result.mismatches[0].got, result.mismatches[0]
    assert "where the reference is float32" in compare("out", expected.astype(np.float32), got, TOL).message
    rows = RowsSumTo(output="w", value=1.0, atol=1e-9).check({"w": np.array([[0.5, 0.5000004]])}, {})
    assert rows is not None and "sums to 1.0000004, expected 1" in rows, rows
    total = SumEquals(output="loads", value=3, atol=0.0).check({"loads": np.array([1.0, 2.0000001])}, {})
    assert total is not None and "adds up to 3.0000001, expected 3" in total, total


def test_nan_never_passes_even_against_nan() -> None:
    expected = np.array([1.0, np.nan])
    assert not compare("x", expected, np.array([1.0, np.nan]), TOL).ok
    assert not compare("x", np.ones(2), np.array([1.0, np.inf]), TOL).ok


def test_integers_compare_exactly() -> None:
    assert not compare("ids", np.array([1, 2]), np.array([1, 3]), TOL).ok
    assert compare("ids", np.array([1, 2]), np.array([1, 2], dtype=np.int32), EXACT).ok


def test_shape_mismatch() -> None:
    result = compare("x", np.zeros((2, 2)), np.zeros((4,)), TOL)
    assert not result.ok and "shape (4,)" in result.message


def test_sort_rows_aligns_weights_with_ids() -> None:
    ids = np.array([[3, 1, 2]])
    weights = np.array([[0.5, 0.2, 0.3]])
    sorted_ids, sorted_w = sort_rows(ids, weights)
    assert sorted_ids.tolist() == [[1, 2, 3]] and sorted_w.tolist() == [[0.2, 0.3, 0.5]]


def test_permutation_rule() -> None:
    rule = Permutation(output="order", length="T*k")
    dims = {"T": 2, "k": 2}
    assert rule.check({"order": np.array([2, 0, 3, 1])}, dims) is None
    assert "index 1 appears 2 times, index 3 never" in rule.check({"order": np.array([0, 1, 1, 2])}, dims)
    assert "outside 0..3" in rule.check({"order": np.array([0, 1, 2, 4])}, dims)
    assert "has 3 entries" in rule.check({"order": np.array([0, 1, 2])}, dims)


def test_groups_rule() -> None:
    rule = Groups(order="order", offsets="offsets", keys="ids", count="E")
    ids = np.array([[2, 0], [0, 1]])  # flat: 2 0 0 1
    ok = {"ids": ids, "order": np.array([1, 2, 3, 0]), "offsets": np.array([0, 2, 3, 4])}
    assert rule.check(ok, {"E": 3}) is None
    shifted = dict(ok, offsets=np.array([2, 3, 4, 4]))
    assert "offsets[0] is 2, expected 0" in rule.check(shifted, {"E": 3})
    misplaced = dict(ok, order=np.array([1, 3, 2, 0]))
    assert "group 0's block" in rule.check(misplaced, {"E": 3})
    short = dict(ok, offsets=np.array([0, 2, 3]))
    assert "expected 4" in rule.check(short, {"E": 3})


def test_count_may_name_a_scalar_input() -> None:
    rule = Groups(order="order", offsets="offsets", keys="ids", count="num_experts")
    ns = {"ids": np.array([[1]]), "num_experts": 2, "order": np.array([0]), "offsets": np.array([0, 0, 1])}
    assert rule.check(ns, {}) is None


@pytest.mark.parametrize(
    ("rule", "good", "bad", "message"),
    [
        (RowsSumTo(output="w"), np.array([[0.25, 0.75]]), np.array([[0.25, 0.5]]), "sums to 0.75"),
        (NonNegative(output="w"), np.array([0.0, 1.0]), np.array([0.0, -1e-9]), "below 0"),
        (DistinctInRows(output="w"), np.array([[1, 2], [2, 1]]), np.array([[1, 2], [3, 3]]), "row 1 of w repeats 3"),
        (InRange(output="w", high="E"), np.array([0, 3]), np.array([0, 4]), "outside [0, 4)"),
        (SumEquals(output="w", value="T*k"), np.array([3, 5]), np.array([3, 4]), "adds up to 7, expected 8"),
    ],
)
def test_simple_rules(rule, good, bad, message) -> None:
    dims = {"E": 4, "T": 4, "k": 2}
    assert rule.check({"w": good}, dims) is None
    assert message in rule.check({"w": bad}, dims)


def test_calc_diff_is_deepgemms_metric_and_bounds_the_difference() -> None:
    from grader.checkers.compare import calc_diff

    x = np.random.default_rng(0).standard_normal(1000)
    assert calc_diff(x, x) == 0 and calc_diff(np.zeros(3), np.zeros(3)) == 0
    assert abs(calc_diff(x, -x) - 2) < 1e-12 and abs(calc_diff(x, 1.01 * x) - 0.01**2 / (1 + 1.01**2)) < 1e-12
    noisy = x + 0.05 * np.random.default_rng(1).standard_normal(1000)
    tol = Tolerance(calc_diff=1e-2)
    assert compare("out", x, noisy, tol).ok  # about 0.05**2 / 2
    far = compare("out", x, 1.5 * x + 0.5, tol)
    assert not far.ok and far.message.startswith("out: calc_diff ") and "exceeds 0.01" in far.message and far.mismatches
    nan = compare("out", x, np.where(np.arange(1000) == 3, np.nan, x), tol)
    assert not nan.ok and "NaN never passes" in nan.message


def test_a_tolerance_has_one_rule() -> None:
    with pytest.raises(ValueError, match="one of norm and calc_diff"):
        Tolerance(norm=1e-2, calc_diff=1e-3)
