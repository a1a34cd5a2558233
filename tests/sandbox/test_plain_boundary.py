"""Plain values through the real sandbox: a dict goes in as the worker's argument, what the
submission returns comes back as strict JSON, and every wrong kind of answer is a failed check
with a reason (never a crash of the grader, never a pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

MANIFEST = """
[lab]
id = "lab-91-plain"
title = "plain values"
time_limit_s = 10

[functions.echo]
args = ["value"]
returns = [{ name = "value", type = "plain", form = "any" }]

[functions.rows]
args = ["n"]
returns = [{ name = "rows", type = "plain", form = "list[dict[str, number]]", limits = { max_bytes = 20000, max_depth = 3, max_items = 100, max_string = 30 } }]

[checks.echo-round-trips]
kind = "property"
title = "a trace-like dict goes in and comes back unchanged"
function = "echo"
points = 1
claim = "echo_round_trips"
trials = 1

[checks.echo-partly]
kind = "property"
title = "a claim that measures how well: partial credit and a table"
function = "echo"
points = 2
claim = "echo_partly"
trials = 1

[checks.rows-have-their-form]
kind = "property"
title = "rows gives n rows"
function = "rows"
points = 1
claim = "rows_have_their_form"
trials = 1
"""

LAB = '''
VALUE = {"traceEvents": [{"name": "k\\u00e9", "ts": 1.5, "dur": 2, "args": {"correlation": 3}}], "none": None,
         "big": "x" * 5000, "nested": [[1, [2, [3]]]], "flag": True}


def echo_round_trips(probe, rng):
    got = probe.submission("echo", {"value": VALUE})["value"]
    return None if got == VALUE else f"came back as {str(got)[:80]}"


def echo_partly(probe, rng):
    from grader.api import Finding
    got = probe.submission("echo", {"value": [1, 2]})["value"]
    return Finding("half of it", fraction=0.5, table=[{"sent": "[1, 2]", "got": str(got)}])


def rows_have_their_form(probe, rng):
    got = probe.submission("rows", {"n": 3})["rows"]
    return None if len(got) == 3 else f"{len(got)} rows"
'''

SOLUTION = '''
def echo(value):
    return value


def rows(n):
    return [{"ts": float(i), "dur": 1} for i in range(n)]
'''


@pytest.fixture
def plain_lab(tmp_path: Path) -> Path:
    lab = tmp_path / "exercises" / "phase" / "lab-91-plain"
    lab.mkdir(parents=True)
    (lab / "manifest.toml").write_text(MANIFEST)
    (lab / "lab.py").write_text(LAB)
    (lab / "solution.py").write_text(SOLUTION)
    return lab


def test_plain_values_cross_both_ways(plain_lab: Path, grade, tmp_path: Path) -> None:
    result = grade(plain_lab, plain_lab / "solution.py")
    by_id = {c.id: c for c in result.checks}
    assert result.gradable and result.score == 3, [c.message for c in result.checks]
    partly = by_id["echo-partly"]
    assert partly.status.value == "failed" and partly.score == 1 and partly.message == "half of it"
    assert partly.table == [{"sent": "[1, 2]", "got": "[1, 2]"}]


NUMPY_ROWS = '''
import numpy as np

def echo(value):
    return value

def rows(n):
    return [{"ts": np.float64(i), "dur": np.int64(1)} for i in range(n)]
'''


def test_numpy_numbers_are_plain_numbers(plain_lab: Path, grade, tmp_path: Path) -> None:
    result = grade(plain_lab, NUMPY_ROWS, tmp_path)
    assert result.score == 3, [c.message for c in result.checks]


HOSTILE = [
    ("return {'ts': 1}", "rows's result should be a list of dicts, got a dict"),
    ("return [{'ts': 'soon'}] * n", "rows's result[0]['ts'] should be a number, got the string 'soon'"),
    ("return [{'ts': float('nan')}] * n", "rows's result holds NaN, which is not a JSON number"),
    ("return [{'ts': 1e308 * 10}] * n", "rows's result holds Infinity, which is not a JSON number"),
    ("return [[[[1]]]]", "nests deeper than 3 levels"),
    ("x = []\n    for _ in range(100000):\n        x = [x]\n    return x", "is not a plain value"),
    ("x = []\n    x.append(x)\n    return x", "is not a plain value: Circular reference detected"),
    ("return [{'ts': {1, 2}}]", "is not a plain value: a set is not a plain value"),
    ("return [{'ts': object()}]", "is not a plain value: a object is not a plain value"),
    ("return [{'k' * 40: 1}]", "a key of 40 characters"),
    ("return [{'ts': 1}] * 1000", "more than 100 values"),
    ("return [{'ts': 10 ** 20000}]", "digits"),
    ("return (row for row in [])", "should be a plain value (list[dict[str, number]]), got a generator"),
    ("return b'[]'", "should be a plain value (list[dict[str, number]]), got a bytes"),
    ("return None", "rows's result should be a list of dicts, got None"),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE, ids=[m[:40] for _, m in HOSTILE])
def test_a_wrong_kind_of_answer_is_a_failed_check_with_a_reason(plain_lab: Path, grade, tmp_path: Path, body: str, message: str) -> None:
    source = SOLUTION.replace('    return [{"ts": float(i), "dur": 1} for i in range(n)]', "    " + body)
    result = grade(plain_lab, source, tmp_path)
    check = {c.id: c for c in result.checks}["rows-have-their-form"]
    assert result.gradable
    assert check.status.value == "failed", check.message
    assert message in check.message
    assert {c.id: c for c in result.checks}["echo-round-trips"].status.value == "passed"
