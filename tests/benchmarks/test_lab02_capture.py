"""benchmarks/lab02_capture.py on the CPU, run as the lead runs it on the GPU machine: a command
line, OUT's files (manifest.json, captures-N.tar), the summary table last."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the test extra installs transformers (lab-02's captures)")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "lab02_capture.py"


def run(out: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), *args], check=False, capture_output=True, text=True, timeout=timeout,
        cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})},
    )


def members(out: Path, manifest: dict) -> dict[str, bytes]:
    files = {}
    for tar in manifest["tars"]:
        with tarfile.open(out / tar["tar"]) as f:
            for m in f.getmembers():
                files[m.name] = f.extractfile(m).read()
    return files


def kv_lengths(trace: dict) -> list[int]:
    """The key length sdpa saw in layer 0, step by step (record_shapes keeps input dims)."""
    events = trace["traceEvents"]
    layer0 = [e for e in events if e.get("name", "").startswith("module:model.layers.0.self_attn:")]
    ops = sorted((e for e in events if e.get("name") == "aten::scaled_dot_product_attention"
                  and any(a["ts"] <= e["ts"] <= a["ts"] + a["dur"] for a in layer0)), key=lambda e: e["ts"])
    return [op["args"]["Input Dims"][1][2] for op in ops]


def test_captures_the_requested_runs_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    done = run(out, "--models", "mixtral,olmoe", "--backends", "grouped_mm,eager", "--batches", "1",
               "--steps", "2", "--warmup", "1", "--prompt-len", "6", "--cold", "grouped_mm:1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["captures-1.tar", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"].startswith("CPU") and manifest["transformers"] and manifest["torch"]
    assert manifest["failed"] == [] and manifest["left_out"] == []
    names = [c["name"] for c in manifest["captures"]]
    assert names == ["mixtral__b1__grouped_mm__cold", "mixtral__b1__grouped_mm", "mixtral__b1__eager",
                     "olmoe__b1__grouped_mm__cold", "olmoe__b1__grouped_mm", "olmoe__b1__eager"]
    files = members(out, manifest)
    assert {"mixtral/config.json", "olmoe/config.json"} <= set(files)
    for c in manifest["captures"]:
        assert len(c["step_wall_s"]) == 2 and all(w > 0 for w in c["step_wall_s"])
        trace = json.loads(gzip.decompress(files[c["file"]]))
        steps = [e for e in trace["traceEvents"]
                 if e.get("cat") == "user_annotation" and e["name"].startswith("ProfilerStep#")]
        assert len(steps) == 2 == c["recorded_steps"]
        scopes = {e["name"] for e in trace["traceEvents"] if e.get("cat") == "user_annotation"}
        assert f"module:model.layers.1.mlp.experts:{'Mixtral' if c['model'] == 'mixtral' else 'Olmoe'}Experts" in scopes
        # Cold: the first recorded step is the first decode step (the 6-token prompt, then its
        # token); warm: one decode step before profiling and the profiler's warm-up step first.
        first = 6 + 1 + (0 if c["cold"] else 2)
        assert kv_lengths(trace) == [first, first + 1], c["name"]
        eager_loop = sum(e.get("name") == "aten::nonzero" for e in trace["traceEvents"])
        assert (eager_loop > 0) == (c["backend"] == "eager"), c["name"]
    # The summary table is the last thing printed, a row per capture.
    tail = done.stdout.strip().splitlines()
    assert tail[-1].startswith("6 captured, 0 failed")
    assert sum(line.startswith(("| mixtral__", "| olmoe__")) for line in tail) == 6


def test_a_backend_that_cannot_load_is_recorded_and_the_rest_still_run(tmp_path):
    fake = tmp_path / "site"
    (fake / "triton").mkdir(parents=True)
    (fake / "triton" / "__init__.py").write_text("raise ImportError('no triton on this machine')\n")
    out = tmp_path / "out"
    done = run(out, "--models", "mixtral", "--backends", "batched_mm,lab05", "--batches", "1", "--steps", "1",
               "--warmup", "0", "--prompt-len", "4", env={"PYTHONPATH": str(fake)})
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["name"] for c in manifest["captures"]] == ["mixtral__b1__batched_mm"]
    assert manifest["captures"][0]["prefill_backend"] == "grouped_mm"
    failed = {f["name"]: f["error"] for f in manifest["failed"]}
    assert set(failed) == {"mixtral__b1__lab05__cold", "mixtral__b1__lab05"}
    assert all("lab05 backend unavailable" in e and "no triton on this machine" in e for e in failed.values())
    assert "| mixtral__b1__lab05 | failed: lab05 backend unavailable" in done.stdout


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    done = run(tmp_path / "out", "--models", "llama", timeout=60)
    assert done.returncode == 2
    assert "--models: llama not among mixtral, deepseek_v3, olmoe" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_lab05_runs_in_the_triton_interpreter(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "out"
    done = run(out, "--models", "olmoe", "--backends", "lab05", "--batches", "2", "--steps", "1", "--warmup", "0",
               "--prompt-len", "3", "--cold", "none")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed"] == []
    trace = json.loads(gzip.decompress(members(out, manifest)["olmoe/olmoe__b2__lab05.json.gz"]))
    experts = [e for e in trace["traceEvents"] if e.get("name", "").startswith("module:model.layers.0.mlp.experts:")]
    assert len(experts) == 1
    inside = [e["name"] for e in trace["traceEvents"] if e.get("cat") == "cpu_op"
              and experts[0]["ts"] <= e["ts"] <= experts[0]["ts"] + experts[0]["dur"]]
    # lab-05's align and fused kernels allocate their buffers in torch; no aten matmul runs in the experts.
    assert inside and not any(n in ("aten::mm", "aten::bmm", "aten::_grouped_mm", "aten::linear") for n in inside)
