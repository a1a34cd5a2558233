"""lab-02's capture checks (lab.py, "=== capture") read a student's trace: proven here on the real
H100 captures the lab keeps (what the GPU check sees) and on hostile traces. The CPU checks
against live captures of the solution and the wrong files run in the lab's self-test."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from support import PHASE

LAB02 = PHASE / "lab-02-profile-fused-moe"

spec = importlib.util.spec_from_file_location("lab02_support_under_test", LAB02 / "lab.py")
lab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab)

# The real captures (taken on an H100, 2026-12-07) whose batch and backend the GPU check may ask
# for: eager only at batch 1 (its loop runs once per expert hit), lab05 has no backend signature.
WARM = [n for n in lab.SHIPPED + lab.HELDOUT if not lab.describe(n)["cold"]]


def request_of(name: str) -> dict:
    info = lab.describe(name)
    folder = "capture" if (LAB02 / "capture" / f"{info['model']}.config.json").exists() else "heldout"
    config = json.loads((LAB02 / folder / f"{info['model']}.config.json").read_text())
    return {"config": config, "backend": info["backend"], "batch": info["batch"], "prompt_len": 32, "steps": 5}


@pytest.mark.parametrize("name", WARM)
def test_a_real_warm_capture_passes_every_gpu_reading(name):
    request = request_of(name)
    facts = lab.capture_facts(lab.capture(name))
    assert lab._identity_problem(request, facts) is None
    assert lab._steps_problem(request, facts, True) is None
    assert lab._warm_problem(request, facts, True) is None
    if request["backend"] != "lab05":
        assert lab._backend_problem(request, facts, True) is None


def test_the_cold_capture_fails_the_warm_up_check_and_only_it():
    name = "mixtral__b1__lab05__cold"
    request = request_of(name)
    facts = lab.capture_facts(lab.capture(name))
    assert lab._steps_problem(request, facts, True) is None
    problem = lab._warm_problem(request, facts, True)
    assert problem and "attends over 33 positions" in problem and "0 earlier decode step(s)" in problem


def test_a_gemm_retiled_as_the_cache_grows_is_still_a_steady_step():
    """DeepSeek-V3's attention GEMMs change cuBLAS tile between recorded steps (the KV length
    grows); the same count of library GEMMs is steady, another count is not."""
    facts = lab.capture_facts(lab.capture("deepseek_v3__b1__grouped_mm"))
    names = [set(step["kernels"]) for step in facts["steps"]]
    assert all("a cuBLAS or CUTLASS GEMM" in n for n in names)
    request = request_of("deepseek_v3__b1__grouped_mm")
    assert lab._steps_problem(request, facts, True) is None
    facts["steps"][2]["kernels"]["a cuBLAS or CUTLASS GEMM"] += 1
    assert "recorded steps 0 and 2 run different kernels" in lab._steps_problem(request, facts, True)


def test_a_canned_trace_is_not_the_capture_asked_for():
    request = request_of("mixtral__b1__grouped_mm")
    facts = lab.capture_facts(lab.capture("mixtral__b1__grouped_mm"))
    for change, said in (
        ({"num_hidden_layers": 2}, "runs 4 decoder layer(s), the model asked for has 2"),
        ({"hidden_size": 2048}, "the embedding is 32000 x 4096"),
        ({"model_type": "olmoe"}, "not OlmoeDecoderLayer"),
    ):
        asked = {**request, "config": {**request["config"], **change}}
        assert said in lab._identity_problem(asked, facts)
    assert "batch [1], not 8" in lab._identity_problem({**request, "batch": 8}, facts)
    steps = lab._steps_problem({**request, "steps": 4}, facts, True)
    assert steps == "the trace records 5 step(s), 4 were asked for"
    backend = lab._backend_problem({**request, "backend": "eager"}, facts, True)
    assert "runs aten::bmm" not in backend and "not the eager backend" in backend


class Answers:
    """A probe whose submission answers every capture with one fixed value."""

    device = "cpu"

    def __init__(self, value):
        self.value = value

    def submission(self, function, inputs, dims=None):
        return {"trace": self.value}


HOSTILE = [
    None,
    [],
    "trace",
    {"traceEvents": "nothing"},
    {"traceEvents": [1, "x", None, [], {"ph": "X"}]},
    {"traceEvents": [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": "0", "dur": 5}]},
    {"traceEvents": [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": 0, "dur": math.nan}]},
    {"traceEvents": [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": True, "dur": 1}]},
    {"traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": 0, "dur": 100},
        {"ph": "X", "cat": "user_annotation", "name": "module:model:MixtralModel", "ts": 1, "dur": 90},
        {"ph": "X", "cat": "user_annotation", "name": "module:model.layers.0:MixtralDecoderLayer", "ts": 2, "dur": 80},
        {"ph": "X", "cat": "cpu_op", "name": "aten::embedding", "ts": 3, "dur": 1, "args": {"Input Dims": "no"}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::embedding", "ts": 4, "dur": 1, "args": [1, 2]},
        {"ph": "X", "cat": "cpu_op", "name": "aten::embedding", "ts": 4, "dur": 1, "args": {"Input Dims": [[[1]], [[2], 1]]}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::scaled_dot_product_attention", "ts": 6, "dur": 1,
         "args": {"Input Dims": [[1, 1, [1], 1], [1, 1, "5", 1]]}},
        {"ph": "X", "cat": "kernel", "name": "k", "ts": 5, "dur": 1, "args": {"correlation": [1]}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 5, "dur": 1, "args": {"correlation": {}}},
    ]},
]


@pytest.mark.parametrize("trace", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_trace_fails_every_capture_check_with_a_message(trace, monkeypatch):
    requests = lab._capture_requests(np.random.default_rng(0), "cpu", 1)
    for claim in (lab.capture_records_the_steps, lab.capture_is_warm, lab.capture_pins_the_backend):
        problem = claim(Answers(trace), np.random.default_rng(0))
        assert isinstance(problem, str) and problem.startswith(lab._asked(requests[0]))


def test_requests_are_of_two_architectures_and_two_backends_one_not_the_default():
    for seed in range(20):
        requests = lab._capture_requests(np.random.default_rng(seed), "cpu", 2)
        assert len({r["config"]["model_type"] for r in requests}) == 2
        assert len({r["backend"] for r in requests}) == 2
        for r in requests:
            assert r["steps"] >= 2 and r["prompt_len"] >= 1
            assert r["batch"] == 1 or r["backend"] == "batched_mm"


def test_the_lab_requires_transformers_before_grading() -> None:
    """A grader without transformers refuses the lab in one line (lab.requires, checked before
    anything is graded) rather than charging the student for the capture checks."""
    from grader.environment import requirements_problem
    from grader.manifest import load_manifest
    from grader.plugins import default as default_plugins

    manifest = load_manifest(LAB02, default_plugins().checkers())
    assert any(r.startswith("transformers") for r in manifest.lab.requires)
    problem = requirements_problem(manifest.id, ["transformers_that_is_not_installed>=5"])
    assert problem and problem.startswith(f"{manifest.id} needs transformers_that_is_not_installed")


class Reader:
    """A probe whose submission reads traces as the reference does, labels through ``label``."""

    device = "cuda"

    def __init__(self, label=None):
        self.ref = lab.reference()
        self.label = label or self.ref.categorize

    def submission(self, function, inputs, dims=None):
        if function == "categorize":
            return {"categories": self.label(inputs["rows"])}
        key = {"kernel_rows": "rows", "step_walls": "walls", "breakdown": "table"}[function]
        return {key: getattr(self.ref, function)(**inputs)}


def test_the_gpu_check_compares_the_students_breakdown_of_its_own_trace():
    trace = lab.well_formed_trace(lab.capture("mixtral__b1__grouped_mm"))
    assert lab._agreement_problem(Reader(), trace) is None
    problem = lab._agreement_problem(Reader(lambda rows: ["other"] * len(rows)), trace)
    assert problem == "your breakdown of it gives other 100.0% of device time, the grader's reading 5.8%"


def test_a_malformed_event_is_left_out_not_obeyed():
    """A crafted event that would trip the reference reader (a list for a correlation id, a
    string for a time) is dropped before anyone reads the student's trace."""
    trace = lab.capture("mixtral__b1__grouped_mm")
    crafted = {"traceEvents": [*trace["traceEvents"],
                               {"ph": "X", "cat": "kernel", "name": "k", "ts": 1.0, "dur": 1.0, "args": {"correlation": [1]}},
                               {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": "1", "dur": 1.0, "pid": 1, "tid": 1}]}
    with pytest.raises(TypeError):
        lab.reference().kernel_rows(crafted)
    clean = lab.well_formed_trace(crafted)
    assert lab.reference().kernel_rows(clean) == lab.reference().kernel_rows(trace)


class Captured(Reader):
    """A probe whose capture answers with the lab's real H100 capture of the request, and whose
    readers are the reference's."""

    def __init__(self, names):
        super().__init__()
        self.names = iter(names)

    def submission(self, function, inputs, dims=None):
        if function == "capture":
            return {"trace": lab.capture(next(self.names))}
        return super().submission(function, inputs, dims)


@pytest.mark.parametrize("names, said", [
    (["mixtral__b1__grouped_mm", "mixtral__b1__batched_mm"], None),
    (["mixtral__b1__eager", "mixtral__b1__lab05__cold"], "0 earlier decode step(s)"),
])
def test_the_gpu_check_on_real_h100_captures(names, said, monkeypatch):
    requests = [request_of(n.removesuffix("__cold")) for n in names]
    monkeypatch.setattr(lab, "_capture_requests", lambda rng, device, count: requests)
    if "lab05" in names[-1]:
        # the grader never asks for lab05 (a sandbox has no lab-05 kernel): no operators to look for
        monkeypatch.setitem(lab.BACKEND_SIGNS, "lab05", (set(), set()))
    problem = lab.capture_on_the_gpu(Captured(names), np.random.default_rng(0))
    assert problem is None if said is None else said in problem
