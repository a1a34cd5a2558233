"""lab-02's grader side: its captures are read through the bounded reader, its label tables are
the labeller's output, its synthetic traces are what the checks say they are, and what is held
back is not shipped."""

from __future__ import annotations

import gzip
import runpy
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from support import PHASE

from grader.sandbox.boot import plain

LAB02 = PHASE / "lab-02-profile-fused-moe"


@pytest.fixture(scope="module")
def lab() -> dict:
    return runpy.run_path(str(LAB02 / "lab.py"))


def test_the_label_tables_are_the_labellers_output(lab: dict) -> None:
    for name in lab["SHIPPED"]:
        with gzip.open(lab["label_table_path"](name), "rt", encoding="utf-8") as fh:
            assert fh.read() == lab["label_table"](name), f"{name}: stale label table; rewrite it with write_label_tables()"


def test_what_is_held_back_is_not_shipped(lab: dict) -> None:
    shipped = {p.name for p in (LAB02 / "capture").iterdir()}
    assert not any(name.startswith("olmoe") for name in shipped), "OLMoE is the architecture the students never see"
    for name in lab["HELDOUT"]:
        assert f"{name}.json.gz" not in shipped and (LAB02 / "heldout" / f"{name}.json.gz").is_file()
    for name in lab["NAPKIN"]:
        assert name in lab["HELDOUT"]


def test_without_annotations_operators_and_position_give_the_same_labels(lab: dict) -> None:
    ref = lab["reference"]()
    for name in lab["SHIPPED"] + lab["HELDOUT"]:
        rows, labels, _ = lab["reading"](name)
        bare = ref.categorize([dict(r, scope=None, module=None) for r in rows])
        total = sum(r["dur"] for r in rows)
        same = sum(r["dur"] for r, a, b in zip(rows, labels, bare) if a == b)
        assert same / total > 0.99, f"{name}: {same / total:.4f}"


@pytest.mark.parametrize("bad", ["bomb", "nan", "not_a_trace", "truncated"])
def test_a_broken_capture_is_the_grader_s_failure_with_its_name(tmp_path: Path, bad: str) -> None:
    copy = tmp_path / LAB02.name
    shutil.copytree(LAB02, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "heldout" / "olmoe__b1__lab05.json.gz"
    content = {
        "bomb": gzip.compress(b"[" + b" " * (80 << 20) + b"]"),
        "nan": gzip.compress(b'{"traceEvents": [{"ts": NaN}]}'),
        "not_a_trace": gzip.compress(b'{"events": []}'),
        "truncated": target.read_bytes()[:5000],
    }[bad]
    target.write_bytes(content)
    lab = runpy.run_path(str(copy / "lab.py"))
    with pytest.raises(lab["LabDataError"], match="the lab's capture olmoe__b1__lab05 "):
        lab["capture"]("olmoe__b1__lab05")


def test_a_broken_capture_makes_the_grading_not_gradable(make_lab, grade) -> None:
    copy = make_lab(LAB02)
    (copy / "capture" / "mixtral__b1__lab05.json.gz").write_bytes(gzip.compress(b'{"traceEvents": [NaN]}'))
    result = grade(copy, copy / "starter.py")
    assert not result.gradable
    assert "mixtral__b1__lab05" in (result.error or "")


@pytest.mark.parametrize("source", ["mixtral__b1__lab05", "deepseek_v3__b1__grouped_mm", "olmoe__b1__batched_mm"])
def test_synthetic_traces_are_what_the_checks_say(lab: dict, source: str) -> None:
    ref = lab["reference"]()
    rng = np.random.default_rng(7)
    # Annotated, two streams, a cold first step: every labelled launch is a row, and only those.
    trace, truth = lab["synthetic"](rng, source, 2, steps=3, streams=2, annotated=True, cold=True)
    assert plain.loads(plain.dumps(trace), lab["TRACE_LIMITS"]) == trace
    rows = ref.kernel_rows(trace)
    assert {r["correlation"] for r in rows} == set(truth)
    assert {r["stream"] for r in rows} == {7, 13}
    cats = Counter(e.get("cat") for e in trace["traceEvents"])
    assert cats["gpu_user_annotation"] > 3 and cats["cuda_driver"] > 0
    walls = ref.step_walls(trace)
    assert walls[0] > 1.3 * max(walls[1:]), "the cold first step is slow"
    assert any(r["kind"] == "memset" and r["step"] == 0 for r in rows)
    # GPU-bound on two streams: kernels overlap, so their sum exceeds the union and the wall.
    trace, truth = lab["synthetic"](rng, source, 2, steps=3, streams=2, annotated=False, dense=True)
    rows = ref.kernel_rows(trace)
    assert all(r["scope"] is None for r in rows)
    table = ref.breakdown(rows, ref.categorize(rows), ref.step_walls(trace))
    assert table["busy_us"] <= table["wall_us"] < table["device_us"]
    labels = ref.categorize(rows)
    agree = sum(r["dur"] for r, c in zip(rows, labels) if c == truth[r["correlation"]]) / sum(r["dur"] for r in rows)
    assert agree > 0.98
