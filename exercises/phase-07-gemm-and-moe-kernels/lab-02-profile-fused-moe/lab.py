"""Grader-side code of lab-02: the captures, synthetic traces built from them, and the claims.

This file runs in the grader's process, never in the student's. It reads every capture, shipped
(capture/) or held back (heldout/), through the same strict, bounded JSON reader as any
untrusted file. The reference is this folder's solution.py (its reader and labeller); the
synthetic traces are assembled from the labelled layers of real captures, so their labels are
the real ones, whatever the synthetic trace omits (module annotations, say).
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import io
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from grader.api import Finding, SubmissionFault, plain

HERE = Path(__file__).resolve().parent

# --- the captures --------------------------------------------------------------------------------

# Shipped to students (capture/); held back for grading (heldout/): OLMoE is never shipped.
SHIPPED = [
    "mixtral__b1__grouped_mm",
    "mixtral__b1__lab05",
    "mixtral__b1__batched_mm",
    "mixtral__b1__eager",
    "mixtral__b64__grouped_mm",
    "deepseek_v3__b1__grouped_mm",
]
HELDOUT = [
    "olmoe__b1__grouped_mm",
    "olmoe__b64__grouped_mm",
    "olmoe__b1__lab05",
    "olmoe__b1__batched_mm",
    "deepseek_v3__b64__lab05",
    "mixtral__b1__lab05__cold",
]
ANNOTATED = "mixtral__b1__grouped_mm"
"""The capture the handout's table and the prediction are about."""

TRACE_LIMITS = plain.Limits(max_bytes=64 << 20, max_depth=8, max_items=8_000_000, max_string=100_000)
"""A capture as read from disk: the course's are 3-14 MB of JSON, under 2 million values."""

CONFIGS = {
    # Per-layer sizes of the captured models (transformers 5.17 defaults), for the napkin.
    "mixtral": {"hidden": 4096, "expert_intermediate": 14336, "experts": 8, "top_k": 2, "moe_layers": 4, "shared_experts": 0},
    "olmoe": {"hidden": 2048, "expert_intermediate": 2048, "experts": 64, "top_k": 8, "moe_layers": 4, "shared_experts": 0},
    "deepseek_v3": {"hidden": 7168, "expert_intermediate": 2048, "experts": 256, "top_k": 8, "moe_layers": 2, "shared_experts": 1},
}


class LabDataError(RuntimeError):
    """One of the lab's own captures is missing or unreadable: the grader's failure, not the student's."""


def capture_path(name: str) -> Path:
    folder = "capture" if name in SHIPPED else "heldout"
    return HERE / folder / f"{name}.json.gz"


@functools.lru_cache(maxsize=16)
def capture(name: str) -> dict:
    """A capture as the dict json.load gives, read strictly within TRACE_LIMITS."""
    try:
        trace = plain.read_file(str(capture_path(name)), TRACE_LIMITS)
    except plain.PlainError as exc:
        raise LabDataError(f"the lab's capture {name} {exc}") from None
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        raise LabDataError(f"the lab's capture {name} is not a Chrome trace (no traceEvents list)")
    return trace


def describe(name: str) -> dict:
    """Model, batch and backend of a capture, from its name."""
    model, batch, backend, *rest = name.split("__")
    return {"model": model, "batch": int(batch[1:]), "backend": backend, "cold": bool(rest)}


@functools.lru_cache(maxsize=1)
def reference() -> Any:
    """This folder's solution.py, the reference reader and labeller (never a student's file)."""
    name = "grader_lab02_reference_" + str(abs(hash(str(HERE))))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "solution.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=16)
def _reading(name: str) -> tuple[list[dict], list[str], list[float]]:
    ref = reference()
    trace = capture(name)
    rows = ref.kernel_rows(trace)
    return rows, ref.categorize(rows), ref.step_walls(trace)


def reading(name: str) -> tuple[list[dict], list[str], list[float]]:
    """The reference's rows, labels and step walls of a capture (copies: callers may edit them)."""
    rows, labels, walls = _reading(name)
    return [dict(r, ops=list(r["ops"])) for r in rows], list(labels), list(walls)


# --- synthetic traces ----------------------------------------------------------------------------

LAYER = re.compile(r"model\.layers\.(\d+)(?=[.:])")
LIBRARY_STEP = 2
"""The steady step of a real capture whose kernels the synthetic traces are made of."""


@functools.lru_cache(maxsize=16)
def library(name: str) -> dict:
    """One steady step of a real capture, cut into head, dense layers, MoE layers and tail: for
    each kernel its launch call, the ranges around that call (operators and module annotations,
    outermost first), the kernel itself and its reference label."""
    ref = reference()
    trace = capture(name)
    events = trace["traceEvents"]
    rows, labels, _ = _reading(name)
    label_of = {r["correlation"]: c for r, c in zip(rows, labels) if r["step"] == LIBRARY_STEP}
    launches = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("ph") == "X" and e.get("cat") in ref.LAUNCH_CATEGORIES and "correlation" in e.get("args", {})
    }
    gpu = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("ph") == "X" and e.get("cat") in ref.GPU_KINDS and e["args"].get("correlation") in label_of
    }
    order = sorted(gpu)
    chains = ref._enclosing(events, [launches[c] for c in order])
    items = []
    for c in order:
        launch = launches[c]
        chain = [(r["cat"], r["name"], id(r)) for r in chains[id(launch)]]
        layers = [int(m.group(1)) for cat, n, _ in chain if cat == "user_annotation" for m in [LAYER.search(n)] if m]
        items.append({
            "launch": (launch["cat"], launch["name"], float(launch["dur"])),
            "chain": chain,
            "kernel": (gpu[c]["cat"], gpu[c]["name"], float(gpu[c]["dur"])),
            "label": label_of[c],
            "layer": layers[0] if layers else None,
        })
    in_layers = [n for n, it in enumerate(items) if it["layer"] is not None]
    first, last = in_layers[0], in_layers[-1]
    groups: dict[int, list[dict]] = {}
    for it in items[first : last + 1]:
        groups.setdefault(it["layer"], []).append(it)
    moe = [g for _, g in sorted(groups.items()) if any(it["label"] == "expert_gemm" for it in g)]
    dense = [g for _, g in sorted(groups.items()) if not any(it["label"] == "expert_gemm" for it in g)]
    return {"head": items[:first], "dense": dense, "moe": moe, "tail": items[last + 1 :]}


def _renamed(chain: list[tuple[str, str, int]], old: int | None, new: int, copy: Any) -> list[tuple[str, str, Any]]:
    out = []
    for cat, name, key in chain:
        if old is not None and cat == "user_annotation":
            name = LAYER.sub(lambda m: f"model.layers.{new}" if int(m.group(1)) == old else m.group(0), name)
        out.append((cat, name, (copy, key)))
    return out


def synthetic(
    rng: np.random.Generator,
    source: str,
    layers: int,
    steps: int = 3,
    streams: int = 1,
    annotated: bool = True,
    cold: bool = False,
    dense: bool = False,
) -> tuple[dict, dict[int, str]]:
    """A Chrome trace of ``steps`` decode steps of a model made from ``source``'s layers: its
    head, its dense layers, ``layers`` MoE layers drawn from its own, its tail. Durations are
    jittered; the CPU pauses now and then (the GPU idles); with ``streams`` = 2 some kernels run
    on a second stream and overlap; without ``annotated`` no module annotation is written; a
    ``cold`` first step is slow and does extra work; ``dense`` launches so fast that the GPU is
    never starved (GPU-bound). Returns the trace and the true label of every correlation id."""
    lib = library(source)
    plan: list[tuple[dict, list]] = []
    for it in lib["head"]:
        plan.append((it, _renamed(it["chain"], None, 0, "head")))
    position = 0
    for group in lib["dense"]:
        for it in group:
            plan.append((it, _renamed(it["chain"], it["layer"], position, ("dense", position))))
        position += 1
    picks = rng.integers(0, len(lib["moe"]), size=layers)
    for pick in picks:
        for it in lib["moe"][int(pick)]:
            plan.append((it, _renamed(it["chain"], it["layer"], position, ("moe", position))))
        position += 1
    for it in lib["tail"]:
        plan.append((it, _renamed(it["chain"], None, 0, "tail")))

    pid, tid, main_stream, side_stream = int(rng.integers(100, 60000)), 0, 7, 13
    tid = pid
    events: list[dict] = [{"name": "process_name", "ph": "M", "ts": 0.0, "pid": pid, "tid": 0, "args": {"name": "python3"}}]
    truth: dict[int, str] = {}
    correlation = int(rng.integers(1000, 5000))
    t = float(rng.uniform(1e9, 5e9))
    free = {main_stream: t, side_stream: t}
    ext = 0

    def r3(x: float) -> float:
        return round(x, 3)

    def launch(name: str, cat: str, dur: float, kernel: tuple[str, str, float] | None, stream: int) -> None:
        nonlocal t, correlation, ext
        correlation += 1
        ext += 1
        start = t
        events.append({"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": r3(start), "dur": r3(dur),
                       "args": {"External id": ext, "cbid": 211, "correlation": correlation}})
        if kernel is not None:
            events.append({"ph": "s", "id": correlation, "pid": pid, "tid": tid, "ts": r3(start), "cat": "ac2g", "name": "ac2g"})
        t += dur
        if kernel is not None:
            kcat, kname, kdur = kernel
            begin = max(start + dur * 0.6 + 2.0, free[stream])
            length = max(0.6, kdur * float(rng.lognormal(0.0, 0.15)))
            free[stream] = begin + length
            args = {"External id": ext, "device": 0, "stream": stream, "correlation": correlation}
            if kcat == "gpu_memcpy":
                args["bytes"] = 16
            events.append({"ph": "X", "cat": kcat, "name": kname, "pid": 0, "tid": stream, "ts": r3(begin),
                           "dur": r3(length), "args": args})
            events.append({"ph": "f", "id": correlation, "pid": 0, "tid": stream, "ts": r3(begin), "cat": "ac2g",
                           "name": "ac2g", "bp": "e"})

    # A kernel before the first recorded step: it belongs to no step.
    launch("cudaLaunchKernel", "cuda_runtime", 5.0, ("kernel", "void at::native::warmup_kernel<float>()", 3.0), main_stream)
    t += 50.0
    for step in range(steps):
        slow = cold and step == 0
        step_start = t
        open_ranges: list[list] = []
        if slow:
            launch("cudaMemsetAsync", "cuda_runtime", 40.0, ("gpu_memset", "Memset (Device)", 2.5), main_stream)
            truth[correlation] = "other"
            t += float(rng.uniform(2000, 4000))
        for it, chain in plan:
            if not annotated:
                chain = [c for c in chain if c[0] != "user_annotation"]
            chain = [(cat, name, (step, key)) for cat, name, key in chain]
            keep = 0
            while keep < len(open_ranges) and keep < len(chain) and open_ranges[keep][2] == chain[keep][2]:
                keep += 1
            for r in reversed(open_ranges[keep:]):
                t += 0.05 if dense else float(rng.uniform(0.5, 2.0))
                events.append({"ph": "X", "cat": r[0], "name": r[1], "pid": pid, "tid": tid, "ts": r3(r[3]),
                               "dur": r3(t - r[3]), "args": {"External id": 0}})
            open_ranges = open_ranges[:keep]
            for cat, name, key in chain[keep:]:
                t += 0.05 if dense else float(rng.uniform(0.5, 3.0))
                open_ranges.append([cat, name, key, t])
            t += 0.05 if dense else float(rng.uniform(0.3, 1.5))
            lcat, lname, ldur = it["launch"]
            ldur = 0.2 if dense else max(2.0, ldur * float(rng.uniform(0.7, 1.3))) * (4.0 if slow else 1.0)
            stream = side_stream if streams == 2 and rng.random() < 0.4 else main_stream
            launch(lname, lcat, ldur, it["kernel"], stream)
            truth[correlation] = it["label"]
            if not dense and rng.random() < 0.02:
                t += float(rng.uniform(20, 300))  # a host sync, an allocation: the GPU idles
            if rng.random() < 0.05:
                # A runtime call with a correlation id and no GPU work.
                launch("cudaStreamIsCapturing", "cuda_runtime", 0.3, None, main_stream)
        for r in reversed(open_ranges):
            t += 0.5
            events.append({"ph": "X", "cat": r[0], "name": r[1], "pid": pid, "tid": tid, "ts": r3(r[3]),
                           "dur": r3(t - r[3]), "args": {"External id": 0}})
        t = max(t, *free.values()) + float(rng.uniform(5, 30))
        launch("cudaDeviceSynchronize", "cuda_runtime", 1.0, None, main_stream)
        name = f"ProfilerStep#{step + 1}"
        events.append({"ph": "X", "cat": "user_annotation", "name": name, "pid": pid, "tid": tid, "ts": r3(step_start),
                       "dur": r3(t - step_start), "args": {"External id": 0}})
        # The profiler's copy of the step on the GPU timeline: not GPU work.
        events.append({"ph": "X", "cat": "gpu_user_annotation", "name": name, "pid": 0, "tid": main_stream,
                       "ts": r3(step_start + 3.0), "dur": r3(t - step_start - 6.0), "args": {"External id": 0}})
        t += float(rng.uniform(20, 80))
    if annotated:
        # Module annotations copied onto the GPU timeline, as torch.profiler writes them.
        for e in [e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("module:")][:50]:
            events.append(dict(e, cat="gpu_user_annotation", pid=0, tid=main_stream))
    order = rng.permutation(len(events))
    trace = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3"}],
             "traceEvents": [events[i] for i in order], "traceName": f"synthetic from {source}"}
    return trace, truth


# --- comparing rows ------------------------------------------------------------------------------

ROW_FORM = {
    "name": str, "kind": str, "step": int, "ts": (int, float), "dur": (int, float), "stream": int,
    "correlation": int, "op": (str, type(None)), "ops": list, "scope": (str, type(None)), "module": (str, type(None)),
}
LAUNCH_FIELDS = ("step", "op", "ops", "scope", "module")


def _short(name: Any, width: int = 70) -> str:
    text = str(name)
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _row_problem(rows: Any) -> str | None:
    for n, row in enumerate(rows):
        for key, kind in ROW_FORM.items():
            if key not in row:
                return f"row {n} has no {key!r} (a row has {', '.join(ROW_FORM)})"
            value = row[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                return f"row {n}'s {key!r} is {_short(value, 40)}, not a {getattr(kind, '__name__', 'number or None')}"
        if not all(isinstance(op, str) for op in row["ops"]):
            return f"row {n}'s 'ops' should be a list of operator names"
    return None


def _launched_by(name: str, trace: dict) -> str:
    for e in trace["traceEvents"]:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and e.get("name") == name:
            corr = e["args"].get("correlation")
            for launch in trace["traceEvents"]:
                if launch.get("cat") in ("cuda_runtime", "cuda_driver") and launch.get("args", {}).get("correlation") == corr:
                    return f"{launch['name']} ({launch['cat']})"
    return "?"


def compare_kernels(got: list[dict], want: list[dict], trace: dict) -> str | None:
    """None when ``got`` holds exactly the GPU work of ``want``, in order, with the same fields."""
    problem = _row_problem(got)
    if problem:
        return problem
    want_by = {r["correlation"]: r for r in want}
    got_ids = Counter(r["correlation"] for r in got)
    twice = [c for c, n in got_ids.items() if n > 1]
    if twice:
        row = next(r for r in got if r["correlation"] == twice[0])
        return f"{len(twice)} correlation id(s) appear more than once, e.g. {twice[0]} ({_short(row['name'])}); each launch has one kernel"
    extra = [r for r in got if r["correlation"] not in want_by]
    if extra:
        return (
            f"{len(extra)} row(s) are not GPU work launched in a recorded step, e.g. {_short(extra[0]['name'])} "
            f"(correlation {extra[0]['correlation']}, ts {extra[0]['ts']})"
        )
    missing = [r for r in want if r["correlation"] not in got_ids]
    if missing:
        kinds = Counter(r["kind"] for r in missing)
        first = missing[0]
        return (
            f"{len(missing)} of {len(want)} kernels, memcpys and memsets are missing ({dict(kinds)}), e.g. "
            f"{_short(first['name'])} in step {first['step']}, launched by {_launched_by(first['name'], trace)}"
        )
    for r in got:
        w = want_by[r["correlation"]]
        for key in ("name", "kind", "stream"):
            if r[key] != w[key]:
                return f"the row of correlation {w['correlation']} ({_short(w['name'], 40)}) has {key} {_short(r[key], 40)}, expected {_short(w[key], 40)}"
        for key in ("ts", "dur"):
            if not math.isclose(r[key], w[key], rel_tol=1e-12, abs_tol=1e-6):
                return f"the row of correlation {w['correlation']} ({_short(w['name'], 40)}) has {key} {r[key]!r}, expected {w[key]!r} (microseconds, as the trace gives them)"
    for n in range(1, len(got)):
        a, b = got[n - 1], got[n]
        if (a["ts"], a["correlation"]) > (b["ts"], b["correlation"]):
            return f"rows {n - 1} and {n} are out of order: sort by start time (ts), then correlation id"
    return None


def compare_launches(got: list[dict], want: list[dict]) -> str | None:
    """None when every row's step, operators and scope are the reference's."""
    want_by = {r["correlation"]: r for r in want}
    wrong: Counter = Counter()
    first = None
    for r in got:
        w = want_by.get(r["correlation"])
        if w is None:
            continue
        for key in LAUNCH_FIELDS:
            if r.get(key) != w[key]:
                wrong[key] += 1
                first = first or (key, r, w)
    if first:
        key, r, w = first
        counts = ", ".join(f"{k} of {n} row(s)" for k, n in wrong.items())
        return (
            f"wrong {counts}; e.g. {_short(w['name'], 50)} (correlation {w['correlation']}): {key} is "
            f"{_short(r.get(key), 80)}, expected {_short(w[key], 80)}"
        )
    return None


def _rows_cases(rng: np.random.Generator, shipped: str, heldout: str) -> Iterator[tuple[str, dict, list[dict]]]:
    """(what, trace, reference rows): one shipped capture, one held back, two synthetic traces,
    each made when it is asked for (a reader that fails the first never waits for the rest)."""
    ref = reference()
    for name in (shipped, heldout):
        yield (f"the capture {name}" + ("" if name in SHIPPED else " (held back)"), capture(name), _reading(name)[0])
    for annotated, streams, cold in ((True, 2, True), (False, 1, False)):
        source = SOURCES[int(rng.integers(len(SOURCES)))]
        trace, _ = synthetic(rng, source, int(rng.integers(1, 3)), steps=3, streams=streams, annotated=annotated, cold=cold)
        what = f"a synthetic trace from {source}'s layers ({'annotated' if annotated else 'no annotations'}, {streams} stream(s))"
        yield what, trace, ref.kernel_rows(trace)


SOURCES = [n for n in SHIPPED + HELDOUT if not describe(n)["cold"]]


def rows_are_the_kernels(probe, rng: np.random.Generator) -> str | None:
    for what, trace, want in _rows_cases(rng, "mixtral__b1__lab05", "deepseek_v3__b64__lab05"):
        got = probe.submission("kernel_rows", {"trace": trace})["rows"]
        problem = compare_kernels(got, want, trace)
        if problem:
            return f"{what}: {problem}"
    return None


def rows_tied_to_launch(probe, rng: np.random.Generator) -> str | None:
    for what, trace, want in _rows_cases(rng, "mixtral__b1__grouped_mm", "olmoe__b1__batched_mm"):
        got = probe.submission("kernel_rows", {"trace": trace})["rows"]
        problem = _row_problem(got) or compare_launches(got, want)
        if problem:
            return f"{what}: {problem}"
    return None


def walls_are_the_steps(probe, rng: np.random.Generator) -> str | None:
    ref = reference()
    cases = [("the capture mixtral__b1__eager", capture("mixtral__b1__eager"))]
    for _ in range(2):
        source = SOURCES[int(rng.integers(len(SOURCES)))]
        cases.append((f"a synthetic trace from {source}'s layers", synthetic(rng, source, 1, steps=int(rng.integers(3, 6)))[0]))
    for what, trace in cases:
        want = ref.step_walls(trace)
        got = probe.submission("step_walls", {"trace": trace})["walls"]
        if len(got) != len(want):
            return f"{what}: {len(got)} step(s), the trace records {len(want)} (ProfilerStep#N rows on the CPU timeline)"
        for n, (g, w) in enumerate(zip(got, want)):
            if not math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-6):
                return f"{what}: step {n} took {w:g} us, got {g:g}"
    return None


# --- categories ----------------------------------------------------------------------------------

FULL_MARKS, NO_MARKS = 0.95, 0.80
ELEMENTWISE = re.compile(r"elementwise_kernel")


class WrongAnswer(Exception):
    """A wrong kind of answer found inside a claim (turned into its failure message)."""


def _labels(probe, rows: list[dict], what: str) -> list[str]:
    got = probe.submission("categorize", {"rows": rows})["categories"]
    if len(got) != len(rows):
        raise WrongAnswer(f"{what}: {len(got)} categories for {len(rows)} rows (one per row)")
    unknown = sorted(set(got) - set(reference().CATEGORIES))
    if unknown:
        raise WrongAnswer(f"{what}: {_short(unknown[0], 30)} is not a category (they are {', '.join(reference().CATEGORIES)})")
    return got


def _accuracy(rows: list[dict], got: list[str], want: list[str], only: Any = None) -> tuple[float, Counter]:
    total = hit = 0.0
    confused: Counter = Counter()
    for r, g, w in zip(rows, got, want):
        if only is not None and not only(r):
            continue
        total += r["dur"]
        if g == w:
            hit += r["dur"]
        else:
            confused[(w, g)] += r["dur"]
    return (hit / total if total else 1.0), confused


def _steady(rows: list[dict], labels: list[str], steps: tuple[int, ...] = (1, 2)) -> tuple[list[dict], list[str]]:
    """The rows of a few steady steps (what categorize is graded on: smaller, and just as hard)."""
    keep = [n for n, r in enumerate(rows) if r["step"] in steps]
    return [rows[n] for n in keep], [labels[n] for n in keep]


def _bare(rows: list[dict]) -> list[dict]:
    return [dict(r, scope=None, module=None) for r in rows]


def _score(cases: list[tuple[str, list[dict], list[str]]], probe, only: Any = None, what_of: str = "") -> Finding:
    table = []
    worst = (2.0, "", Counter())
    try:
        for what, rows, want in cases:
            got = _labels(probe, rows, what)
            acc, confused = _accuracy(rows, got, want, only)
            top = confused.most_common(1)
            table.append({"trace": what, f"time-weighted accuracy{what_of}": f"{acc:.3f}",
                          "largest confusion": f"{top[0][0][0]} labelled {top[0][0][1]}" if top else ""})
            if acc < worst[0]:
                worst = (acc, what, confused)
    except WrongAnswer as exc:
        return Finding(str(exc), fraction=0.0, table=table)
    acc, what, confused = worst
    fraction = min(1.0, max(0.0, (acc - NO_MARKS) / (FULL_MARKS - NO_MARKS)))
    if acc >= FULL_MARKS:
        return Finding(None, f"time-weighted accuracy{what_of} at least {acc:.3f} on all {len(cases)} traces", table=table)
    (true, said), _ = confused.most_common(1)[0]
    total = sum(confused.values())
    return Finding(
        f"time-weighted accuracy{what_of} {acc:.3f} on {what} (full marks from {FULL_MARKS}, none below {NO_MARKS}); "
        f"most of the misses are {true} kernels labelled {said} ({confused[(true, said)] / max(total, 1e-9):.0%} of the missed time)",
        fraction=fraction,
        table=table,
    )


def categories_on_shipped(probe, rng: np.random.Generator) -> Finding:
    cases = []
    for name in SHIPPED:
        rows, labels = _steady(*reading(name)[:2])
        cases.append((f"the capture {name}", rows, labels))
    return _score(cases, probe)


def categories_on_unseen(probe, rng: np.random.Generator) -> Finding:
    cases = []
    for name in HELDOUT:
        if describe(name)["cold"]:
            continue
        rows, labels = _steady(*reading(name)[:2], steps=(2,))
        annotated = bool(rng.integers(0, 2))
        cases.append((f"the held-back capture {name}" + ("" if annotated else ", annotations stripped"),
                      rows if annotated else _bare(rows), labels))
    for annotated in (True, False):
        source = SOURCES[int(rng.integers(len(SOURCES)))]
        trace, truth = synthetic(rng, source, int(rng.integers(1, 4)), steps=2, streams=2, annotated=annotated)
        rows = reference().kernel_rows(trace)
        cases.append((f"a synthetic trace from {source}'s layers" + ("" if annotated else ", no annotations"),
                      rows, [truth[r["correlation"]] for r in rows]))
    return _score(cases, probe)


def categories_of_elementwise(probe, rng: np.random.Generator) -> Finding:
    cases = []
    for source in ("olmoe__b1__grouped_mm", "mixtral__b64__grouped_mm", "deepseek_v3__b1__grouped_mm"):
        trace, truth = synthetic(rng, source, int(rng.integers(1, 3)), steps=2, annotated=bool(rng.integers(0, 2)))
        rows = reference().kernel_rows(trace)
        cases.append((f"a synthetic trace from {source}'s layers", rows, [truth[r["correlation"]] for r in rows]))
    return _score(cases, probe, only=lambda r: bool(ELEMENTWISE.search(r["name"])), what_of=" on elementwise kernels")


# --- breakdown -----------------------------------------------------------------------------------

FIELDS = ("device_us", "busy_us", "wall_us", "idle")


def _breakdown_cases(rng: np.random.Generator) -> list[tuple[str, list[dict], list[str], list[float]]]:
    ref = reference()
    out = []
    for name in ("mixtral__b1__grouped_mm", "mixtral__b1__lab05__cold"):
        rows, labels, walls = reading(name)
        out.append((f"the capture {name}", rows, labels, walls))
    for streams, cold, dense in ((2, True, False), (2, False, True), (1, True, False)):
        source = SOURCES[int(rng.integers(len(SOURCES)))]
        trace, _ = synthetic(rng, source, int(rng.integers(1, 3)), steps=int(rng.integers(3, 5)), streams=streams, cold=cold, dense=dense)
        rows = ref.kernel_rows(trace)
        what = f"a synthetic trace from {source}'s layers ({streams} stream(s){', cold first step' if cold else ''}{', GPU-bound' if dense else ''})"
        out.append((what, rows, ref.categorize(rows), ref.step_walls(trace)))
    return out


def _table_problem(table: dict) -> str | None:
    cats = reference().CATEGORIES
    for key in ("shares", *FIELDS, "steps"):
        if key not in table:
            return f"the table has no {key!r} (it has shares, {', '.join(FIELDS)} and steps)"
    shares = table["shares"]
    if not isinstance(shares, dict):
        return "'shares' should be a dict {category: share}"
    missing = [c for c in cats if c not in shares]
    if missing or set(shares) - set(cats):
        bad = missing[0] if missing else min(set(shares) - set(cats))
        return f"'shares' should have exactly the nine categories as keys ({'missing' if missing else 'unknown'}: {bad!r})"
    for key in FIELDS + ("steps",):
        if not isinstance(table[key], (int, float)):
            return f"{key!r} should be a number"
    return None


def breakdown_conserves(probe, rng: np.random.Generator) -> str | None:
    for what, rows, labels, walls in _breakdown_cases(rng):
        table = probe.submission("breakdown", {"rows": rows, "categories": labels, "walls": walls})["table"]
        problem = _table_problem(table)
        if problem:
            return f"{what}: {problem}"
        shares = table["shares"]
        if any(v < 0 for v in shares.values()):
            return f"{what}: a negative share ({min(shares, key=shares.get)})"
        if abs(sum(shares.values()) - 1.0) > 1e-6:
            return f"{what}: the shares add up to {sum(shares.values()):.6f}, not 1"
        if table["busy_us"] > table["wall_us"] * (1 + 1e-9):
            return f"{what}: busy_us {table['busy_us']:.1f} exceeds wall_us {table['wall_us']:.1f}: the GPU cannot be busy longer than the step lasts (overlapping kernels count once)"
        if table["busy_us"] > table["device_us"] * (1 + 1e-9):
            return f"{what}: busy_us {table['busy_us']:.1f} exceeds device_us {table['device_us']:.1f}: the union of intervals is never longer than their sum"
        if not math.isclose(table["idle"], 1 - table["busy_us"] / table["wall_us"], abs_tol=1e-9):
            return f"{what}: idle {table['idle']:.4f} is not 1 - busy_us / wall_us = {1 - table['busy_us'] / table['wall_us']:.4f}"
        steps = int(table["steps"])
        counted = [r for r in rows if 1 <= r["step"] < len(walls)]
        total = sum(r["dur"] for r in counted)
        if steps < 1 or not math.isclose(table["device_us"] * steps, total, rel_tol=1e-9):
            return (
                f"{what}: device_us * steps = {table['device_us'] * steps:.1f} us, but the {len(counted)} kernels of the steady "
                f"steps (all but the first) last {total:.1f} us in all: each is counted once"
            )
    return None


def breakdown_matches(probe, rng: np.random.Generator) -> str | None:
    ref = reference()
    for what, rows, labels, walls in _breakdown_cases(rng):
        args = {"rows": rows, "categories": labels, "walls": walls}
        table = probe.submission("breakdown", args)["table"]
        problem = _table_problem(table)
        if problem:
            return f"{what}: {problem}"
        want = ref.breakdown(rows, labels, walls)
        if int(table["steps"]) != want["steps"]:
            return f"{what}: averaged over {table['steps']} step(s), expected {want['steps']} (all recorded steps but the first)"
        for key in FIELDS:
            if not math.isclose(table[key], want[key], rel_tol=1e-6, abs_tol=1e-6):
                return f"{what}: {key} is {table[key]:.4f}, expected {want[key]:.4f}"
        for c in ref.CATEGORIES:
            if abs(table["shares"][c] - want["shares"][c]) > 1e-6:
                return f"{what}: the share of {c} is {table['shares'][c]:.5f}, expected {want['shares'][c]:.5f}"
    return None


# --- predictions ---------------------------------------------------------------------------------


def _distribution_problem(prediction: dict) -> str | None:
    cats = reference().CATEGORIES
    unknown = sorted(set(prediction) - set(cats))
    if unknown:
        return f"{_short(unknown[0], 30)} is not a category (they are {', '.join(cats)})"
    if any(v < 0 for v in prediction.values()):
        return f"the share of {min(prediction, key=prediction.get)} is negative"
    total = sum(prediction.values())
    if abs(total - 1.0) > 0.01:
        return f"the shares add up to {total:.4f}, not 1"
    return None


def prediction_is_a_distribution(probe, rng: np.random.Generator) -> Finding:
    prediction = probe.submission("predict", {})["prediction"]
    problem = _distribution_problem(prediction)
    if problem:
        return Finding(f"your prediction: {problem}")
    measured = measured_shares()
    table = [{"category": c, "predicted": f"{prediction.get(c, 0.0):.3f}", "measured": f"{measured[c]:.3f}"} for c in measured]
    return Finding(None, f"a distribution over {len(prediction)} categories (its form is all that is graded)", table=table)


@functools.lru_cache(maxsize=1)
def _measured() -> tuple[tuple[str, float], ...]:
    rows, labels, walls = _reading(ANNOTATED)
    return tuple(reference().breakdown(rows, labels, walls)["shares"].items())


def measured_shares() -> dict[str, float]:
    """The annotated capture's shares of device time, by the reference."""
    return dict(_measured())


def _gap_pairs(rng: np.random.Generator) -> list[tuple[dict, dict]]:
    cats = reference().CATEGORIES
    out = []
    for n in range(6):
        a = rng.dirichlet(np.full(len(cats), 0.7))
        b = rng.dirichlet(np.full(len(cats), 0.7))
        gaps = np.abs(a - b)
        if np.sort(gaps)[-1] - np.sort(gaps)[-2] < 1e-3:
            continue  # a near tie: either answer would be fair
        prediction = {c: float(v) for c, v in zip(cats, a)}
        if n % 2:
            drop = cats[int(rng.integers(len(cats)))]
            prediction.pop(drop)  # a category left out counts as 0
        out.append((prediction, {c: float(v) for c, v in zip(cats, b)}))
    return out


def _gap(prediction: dict, measured: dict) -> tuple[str, float, float]:
    cats = reference().CATEGORIES
    gaps = sorted((abs(prediction.get(c, 0.0) - measured.get(c, 0.0)), c) for c in cats)
    return gaps[-1][1], gaps[-1][0], gaps[-2][0]


def gap_is_largest_difference(probe, rng: np.random.Generator) -> Finding:
    measured = measured_shares()
    table: list[dict] = []
    pairs = _gap_pairs(rng)
    try:
        own = probe.submission("predict", {})["prediction"]
        if _distribution_problem(own) is None:
            pairs.insert(0, (own, measured))
            table = [{"category": c, "your prediction": f"{own.get(c, 0.0):.3f}", "measured": f"{measured[c]:.3f}",
                      "gap": f"{own.get(c, 0.0) - measured[c]:+.3f}"} for c in measured]
    except SubmissionFault:
        pass  # no usable prediction of your own: only the others are asked
    for n, (prediction, truth) in enumerate(pairs):
        got = probe.submission("biggest_gap", {"prediction": prediction, "measured": truth})["category"]
        want, first, second = _gap(prediction, truth)
        what = "your prediction against the annotated capture" if table and n == 0 else f"pair {n + (0 if table else 1)}"
        if got != want and abs(abs(prediction.get(got, 0.0) - truth.get(got, 0.0)) - first) > 1e-12:
            return Finding(f"{what}: {_short(got, 30)}, but the largest gap is {want} ({first:.3f}; next {second:.3f})", table=table)
    return Finding(None, f"right on {len(pairs)} pairs" + (", your own prediction included" if table else ""), table=table)


NAPKIN = ["olmoe__b1__grouped_mm", "olmoe__b64__grouped_mm", "olmoe__b1__batched_mm", "deepseek_v3__b64__lab05"]
BAND = 1.6


def napkin_config(name: str) -> dict:
    info = describe(name)
    return {"model": info["model"], "backend": info["backend"], "batch": info["batch"], **CONFIGS[info["model"]],
            "dtype_bytes": 2, "gpu": "NVIDIA H100 80GB HBM3", "hbm_tb_per_s": 3.35}


@functools.lru_cache(maxsize=8)
def measured_expert_us(name: str) -> float:
    rows, labels, walls = _reading(name)
    table = reference().breakdown(rows, labels, walls)
    return table["shares"]["expert_gemm"] * table["device_us"]


def napkin_within_band(probe, rng: np.random.Generator) -> Finding:
    """Within a factor of BAND of each held-back capture's measured expert time. The scorecard
    says too high or too low, never the measurement: the captures stay held back."""
    table = []
    problems = []
    for name in NAPKIN:
        config = napkin_config(name)
        got = float(probe.submission("napkin", {"config": config})["expert_us"])
        ratio = got / measured_expert_us(name)
        verdict = "within the band" if 1 / BAND <= ratio <= BAND else ("too high" if ratio > BAND else "too low")
        what = f"{config['model']}, {config['backend']}, batch {config['batch']}"
        table.append({"held-back capture": what, "your estimate (us)": f"{got:.0f}", "verdict": verdict})
        if verdict != "within the band":
            problems.append(f"{what}: {got:.0f} us is {verdict} (more than {BAND}x off the measurement)")
    if problems:
        return Finding("; ".join(problems), table=table)
    return Finding(None, f"within a factor of {BAND} on all {len(NAPKIN)} held-back captures", table=table)


# --- the label tables shipped beside the captures ------------------------------------------------

LABEL_COLUMNS = ("step", "correlation", "category", "dur_us", "kind", "op", "scope", "name")


def label_table(name: str) -> str:
    """The reference's label of every row of a shipped capture, as CSV text (what
    capture/<name>.labels.csv.gz holds)."""
    rows, labels, _ = _reading(name)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for r, c in zip(rows, labels):
        writer.writerow([r["step"], r["correlation"], c, f"{r['dur']:g}", r["kind"], r["op"] or "", r["scope"] or "", r["name"]])
    return out.getvalue()


def label_table_path(name: str) -> Path:
    return HERE / "capture" / f"{name}.labels.csv.gz"


def write_label_tables() -> None:
    """Rewrite capture/*.labels.csv.gz from the reference, after a change of the labeller:
    ``python -c "import runpy; runpy.run_path('lab.py')['write_label_tables']()"`` in this folder."""
    for name in SHIPPED:
        with open(label_table_path(name), "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(label_table(name).encode("utf-8"))



# --- capture (lab02cap) --------------------------------------------------------------------------
# The capture function's grader side (configurations, steady-state checks) goes below this line.
#
# The grader asks capture() for traces of models it chooses (tiny ones on the CPU, real per-layer
# sizes on a GPU) and reads what it returns as the untrusted data it is: the recorded steps, the
# operators and kernels in each, the module scopes, and the shapes record_shapes keeps (the
# decode input [batch, 1] of the embedding, the key length sdpa sees). Every claim first checks
# that the trace is of the model, batch and prompt it asked for, so a canned trace fails them all.

import bisect
import itertools

CAPTURE_MIN_WARMUP = 2
"""Decode steps that must run, unrecorded, before the first recorded one."""

CAPTURE_PREFIX = {"mixtral": "Mixtral", "deepseek_v3": "DeepseekV3", "olmoe": "Olmoe"}
"""transformers' class-name prefix of each architecture the lab captures."""

BACKEND_SIGNS = {
    # operators that must run in every experts scope of a step, and operators that must not
    "grouped_mm": ({"aten::_grouped_mm", "aten::histc"}, {"aten::bmm", "aten::index_add_", "aten::nonzero"}),
    "batched_mm": ({"aten::bmm", "aten::repeat_interleave"}, {"aten::_grouped_mm", "aten::index_add_", "aten::nonzero"}),
    "eager": ({"aten::one_hot", "aten::nonzero", "aten::linear", "aten::index_add_"}, {"aten::_grouped_mm", "aten::bmm"}),
}

COMPILE_MARKS = ("Torch-Compiled Region", "TorchDynamo", "CompiledFunction", "torch/_dynamo", "torch/_inductor",
                 "cuModuleLoad", "cuLibraryLoad", "triton_compile", "autotune")
"""Rows that mean compilation or autotuning ran inside a recorded step (names start with, or hold, one)."""

CAPTURE_SPREAD = 2.0
"""On a GPU, the slowest recorded step may take at most this many times the median step."""

CAPTURE_AGREEMENT = {"share": 0.05, "relative": 0.02}
"""How close the submission's breakdown of its own GPU capture must come to the grader's reading
of it: each category's share within 5 points, busy and wall time within 2%."""


def _tiny_config(rng: np.random.Generator, arch: str) -> dict:
    """A small random configuration of ``arch`` (sizes drawn, so no trace can be canned)."""
    common = {
        "model_type": arch, "hidden_size": int(rng.choice([32, 48, 64])), "vocab_size": int(rng.integers(160, 600)),
        "max_position_embeddings": 128, "num_attention_heads": 4, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }
    if arch == "mixtral":
        return {**common, "num_hidden_layers": int(rng.integers(1, 3)), "intermediate_size": int(rng.choice([32, 64])),
                "num_local_experts": int(rng.integers(4, 9)), "num_experts_per_tok": 2, "num_key_value_heads": 2}
    if arch == "olmoe":
        return {**common, "num_hidden_layers": int(rng.integers(1, 3)), "intermediate_size": int(rng.choice([16, 32])),
                "num_experts": int(rng.choice([8, 16])), "num_experts_per_tok": int(rng.integers(2, 5)),
                "num_key_value_heads": 4}
    # DeepSeek-V3: one dense layer, then one MoE layer; grouped top-k over 4 groups of 2 or 4 experts.
    return {**common, "num_hidden_layers": 2, "first_k_dense_replace": 1, "intermediate_size": 64,
            "moe_intermediate_size": int(rng.choice([16, 32])), "n_routed_experts": int(rng.choice([8, 16])),
            "n_group": 4, "topk_group": 2, "num_experts_per_tok": int(rng.integers(2, 5)), "n_shared_experts": 1,
            "num_key_value_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
            "qk_nope_head_dim": 16, "v_head_dim": 16, "head_dim": 8}


GPU_CONFIGS = {
    # Real per-layer sizes (transformers' defaults, the flagship checkpoints'), two layers.
    "mixtral": {"model_type": "mixtral", "num_hidden_layers": 2, "max_position_embeddings": 4096},
    "olmoe": {"model_type": "olmoe", "num_hidden_layers": 2},
    "deepseek_v3": {"model_type": "deepseek_v3", "num_hidden_layers": 2, "first_k_dense_replace": 1},
}


def _capture_requests(rng: np.random.Generator, device: str, count: int) -> list[dict]:
    """``count`` capture requests of distinct architectures and backends (of two, one at least is
    not the model's default), each at sizes drawn for it. A capture costs a grading a second or
    two, so each check asks for what it needs. Batches are those whose operator (and kernel) mix
    cannot depend on the routing: eager's loop runs once per expert hit, so it is asked for one
    sequence (exactly k experts hit); on the CPU grouped_mm loops over groups too."""
    archs = [str(a) for a in rng.permutation(sorted(CAPTURE_PREFIX))[:count]]
    backends = [str(b) for b in rng.permutation(sorted(BACKEND_SIGNS))[:count]]
    requests = []
    for arch, backend in zip(archs, backends):
        if device == "cuda":
            batch = 1 if backend == "eager" else int(rng.choice([1, 4, 8]))
            request = {"config": dict(GPU_CONFIGS[arch]), "backend": backend, "batch": batch, "prompt_len": 32, "steps": 5}
        else:
            batch = int(rng.integers(2, 4)) if backend == "batched_mm" else 1
            request = {"config": _tiny_config(rng, arch), "backend": backend, "batch": batch,
                       "prompt_len": int(rng.integers(3, 9)), "steps": int(rng.integers(2, 5))}
        requests.append(request)
    return requests


def _asked(request: dict) -> str:
    c = request["config"]
    return (f"capture({c['model_type']}, {c['num_hidden_layers']} layer(s), hidden {c.get('hidden_size', 'default')}; "
            f"backend {request['backend']}, batch {request['batch']}, prompt_len {request['prompt_len']}, "
            f"steps {request['steps']})")


class _Within:
    """Rows sorted by start, for the rows that start inside a range."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = sorted(rows, key=lambda e: e["ts"])
        self.starts = [e["ts"] for e in self.rows]

    def inside(self, span: dict) -> list[dict]:
        lo = bisect.bisect_left(self.starts, span["ts"])
        hi = bisect.bisect_right(self.starts, span["ts"] + span["dur"])
        return self.rows[lo:hi]


def _dims(row: dict, index: int) -> list[int] | None:
    """The shape of an operator's input ``index``, as record_shapes keeps it; None if absent or not a shape."""
    dims = row.get("args", {}).get("Input Dims")
    if isinstance(dims, list) and len(dims) > index and isinstance(dims[index], list):
        shape = dims[index]
        if all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
            return shape
    return None


LIBRARY_GEMM = re.compile(r"^nvjet_|gemm|gemv|cutlass|xmma|cublas", re.IGNORECASE)
"""cuBLAS and CUTLASS GEMM kernels: the library picks the tile per shape, so as the KV cache grows
the same GEMM of one step may run under another name in the next (DeepSeek-V3's attention does,
measured on the H100 captures); steady steps launch as many of them, not the same names."""


def _kernel_family(name: str) -> str:
    return "a cuBLAS or CUTLASS GEMM" if LIBRARY_GEMM.search(name) else name


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _well_formed(event: Any) -> bool:
    """A complete ("X") event with the fields a reader of it relies on, each of its type: a
    student's trace is data, and an event a reader would trip over is left out, not obeyed."""
    if not (isinstance(event, dict) and event.get("ph") == "X" and isinstance(event.get("name"), str)
            and isinstance(event.get("cat", ""), str) and _number(event.get("ts")) and _number(event.get("dur"))
            and event["dur"] >= 0 and isinstance(event.get("args", {}), dict)):
        return False
    if any(not isinstance(event.get(key, 0), (int, str)) or isinstance(event.get(key), bool) for key in ("pid", "tid")):
        return False
    args = event.get("args", {})
    for key in ("correlation", "stream"):
        if key in args and (not isinstance(args[key], int) or isinstance(args[key], bool)):
            return False
    return True


def well_formed_trace(trace: dict) -> dict:
    """The trace with only its well-formed events: what the checks, the reference and the
    submission's own reader read of a student's capture."""
    return {"traceEvents": [e for e in trace["traceEvents"] if _well_formed(e)]}


def capture_facts(trace: Any) -> dict | str:
    """What the capture checks read from a trace, or why it cannot be read. Per recorded step:
    its wall time, operator names, module forwards, decode inputs, key lengths, experts scopes'
    operators, kernel names (GPU) and compilation rows."""
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return "the answer is not a Chrome trace (a dict whose 'traceEvents' is a list, as export_chrome_trace writes)"
    rows = well_formed_trace(trace)["traceEvents"]
    steps = sorted((e for e in rows if e.get("cat") == "user_annotation" and e["name"].startswith("ProfilerStep#")),
                   key=lambda e: e["ts"])
    ops = _Within([e for e in rows if e.get("cat") == "cpu_op"])
    scopes = _Within([e for e in rows if e.get("cat") == "user_annotation" and e["name"].startswith("module:")])
    launches = {}
    for e in rows:
        corr = e.get("args", {}).get("correlation")
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and corr is not None:
            launches[corr] = e
    kernels = []
    for e in rows:
        corr = e.get("args", {}).get("correlation")
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and corr in launches:
            kernels.append({"name": _kernel_family(e["name"]), "ts": launches[corr]["ts"], "dur": 0})
    kernels = _Within(kernels)
    marks = _Within([e for e in rows if any(m in e["name"] for m in COMPILE_MARKS)])
    facts = []
    for step in steps:
        inside = ops.inside(step)
        mods = scopes.inside(step)
        attn0 = [m for m in mods if m["name"].startswith("module:model.layers.0.self_attn:")]
        sdpa = [o for m in attn0 for o in ops.inside(m) if o["name"] == "aten::scaled_dot_product_attention"]
        facts.append({
            "wall_us": float(step["dur"]),
            "ops": Counter(o["name"] for o in inside),
            "forwards": [m for m in mods if m["name"].startswith("module:model:")],
            "inputs": [_dims(o, 1) for o in inside if o["name"] == "aten::embedding"],
            "embedding": [_dims(o, 0) for o in inside if o["name"] == "aten::embedding"],
            "keys": [d[2] if d and len(d) == 4 else None for d in (_dims(o, 1) for o in sdpa)],
            "queries": [d[2] if d and len(d) == 4 else None for d in (_dims(o, 0) for o in sdpa)],
            "experts": [Counter(o["name"] for o in ops.inside(m)) for m in mods if ".mlp.experts:" in m["name"]],
            "layers": sorted({m["name"].split(":")[1] for m in mods if re.fullmatch(r"module:model\.layers\.\d+:\w+", m["name"])}),
            "decoder": sorted({m["name"].split(":")[2] for m in mods if re.fullmatch(r"module:model\.layers\.\d+:\w+", m["name"])}),
            "kernels": Counter(k["name"] for k in kernels.inside(step)),
            "marks": sorted({m["name"][:80] for m in marks.inside(step)}),
        })
    return {"steps": facts}


def _identity_problem(request: dict, facts: dict) -> str | None:
    """Why the trace is not of the capture asked for (model, layers, sizes, batch), or None."""
    steps = facts["steps"]
    if not steps:
        return "the trace has no ProfilerStep#N range (step the profiler with prof.step() once per decode step)"
    config = request["config"]
    first = steps[0]
    if not first["forwards"]:
        return ("the recorded steps hold no 'module:model:<class>' range: annotate every module's forward "
                "(annotate_modules) before profiling")
    decoder = f"{CAPTURE_PREFIX[config['model_type']]}DecoderLayer"
    if first["decoder"] != [decoder]:
        return f"the trace's decoder layers are {first['decoder'] or 'not annotated'}, not {decoder}: it is not of the model asked for"
    layers = [f"model.layers.{i}" for i in range(config["num_hidden_layers"])]
    if sorted(first["layers"]) != sorted(layers):
        return f"the trace runs {len(first['layers'])} decoder layer(s), the model asked for has {len(layers)}"
    emb = next((d for d in first["embedding"] if d), None)
    if emb is None:
        return "the trace has no aten::embedding with input shapes: profile with record_shapes=True"
    want_h = config.get("hidden_size")
    want_v = config.get("vocab_size")
    if (want_v is not None and emb[0] != want_v) or (want_h is not None and emb[1] != want_h):
        return f"the embedding is {emb[0]} x {emb[1]}, the model asked for has {want_v} x {want_h}"
    batches = {d[0] for s in steps for d in s["inputs"] if d}
    if batches != {request["batch"]}:
        return f"the recorded steps run batch {sorted(batches)}, not {request['batch']}"
    return None


def _capture(probe, request: dict) -> dict | str:
    """The submission's trace of ``request``, read; or a message saying why it is not a capture of it."""
    facts = capture_facts(probe.submission("capture", request)["trace"])
    if isinstance(facts, str):
        return facts
    return _identity_problem(request, facts) or facts


def _each_capture(probe, rng: np.random.Generator, judge, count: int) -> str | None:
    for request in _capture_requests(rng, probe.device, count):
        facts = _capture(probe, request)
        problem = facts if isinstance(facts, str) else judge(request, facts, probe.device == "cuda")
        if problem:
            return f"{_asked(request)}: {problem}"
    return None


def _steps_problem(request: dict, facts: dict, gpu: bool) -> str | None:
    steps = facts["steps"]
    if len(steps) != request["steps"]:
        return f"the trace records {len(steps)} step(s), {request['steps']} were asked for"
    for i, step in enumerate(steps):
        if len(step["forwards"]) != 1:
            return (f"recorded step {i} runs the model {len(step['forwards'])} time(s): one decode step is one "
                    "model forward, and prof.step() follows each")
        if any(d != [request["batch"], 1] for d in step["inputs"]):
            return f"recorded step {i} feeds the model {step['inputs'][0]}, not one new token per sequence [{request['batch']}, 1]"
    keys = [s["keys"][0] if s["keys"] else None for s in steps]
    if None in keys:
        return "a recorded step has no aten::scaled_dot_product_attention with its shapes in layer 0 (sdpa attention, record_shapes=True)"
    if any(b - a != 1 for a, b in itertools.pairwise(keys)):
        return f"the key length seen by attention goes {keys} over the recorded steps: each step should add one token to the cache"
    what = "kernels" if gpu else "ops"
    if gpu and not all(s["kernels"] for s in steps):
        return "a recorded step launched no CUDA kernel: profile with ProfilerActivity.CUDA too"
    for i, step in enumerate(steps[1:], 1):
        if step[what] != steps[0][what]:
            diff = (steps[0][what] - step[what]) + (step[what] - steps[0][what])
            name, count = diff.most_common(1)[0]
            return (f"recorded steps 0 and {i} run different {'kernels' if gpu else 'operators'} ({name[:80]!r} "
                    f"differs by {count}): not the same steady decode step")
    if gpu:
        walls = sorted(s["wall_us"] for s in steps)
        median = walls[len(walls) // 2]
        if walls[-1] > CAPTURE_SPREAD * median:
            return (f"the slowest recorded step took {walls[-1] / 1e3:.1f} ms, over {CAPTURE_SPREAD:g}x the median "
                    f"{median / 1e3:.1f} ms: not steady (first calls, compilation or prefill inside the window?)")
    return None


def _warm_problem(request: dict, facts: dict, gpu: bool) -> str | None:
    steps = facts["steps"]
    for i, step in enumerate(steps):
        if any(d and d[1] != 1 for d in step["inputs"]) or any(q not in (None, 1) for q in step["queries"]):
            return f"recorded step {i} feeds the model the whole prompt: the prefill is inside the recorded window"
        if step["marks"]:
            return f"recorded step {i} compiles or autotunes ({step['marks'][0]!r}): that belongs in the warm-up"
    key = steps[0]["keys"][0] if steps[0]["keys"] else None
    if key is None:
        return "the first recorded step has no attention shapes in layer 0 (sdpa attention, record_shapes=True)"
    before = key - request["prompt_len"] - 1
    if before < CAPTURE_MIN_WARMUP:
        return (f"the first recorded step attends over {key} positions: the {request['prompt_len']}-token prompt, "
                f"{before} earlier decode step(s) and itself; at least {CAPTURE_MIN_WARMUP} decode steps must run "
                "before the profiler records")
    return None


def _backend_problem(request: dict, facts: dict, gpu: bool) -> str | None:
    need, forbid = BACKEND_SIGNS[request["backend"]]
    for i, step in enumerate(facts["steps"]):
        if not step["experts"]:
            return f"recorded step {i} has no 'module:...mlp.experts:<class>' range (annotate every module)"
        for scope in step["experts"]:
            missing = sorted(need - set(scope))
            wrong = sorted(forbid & set(scope))
            if missing or wrong:
                said = f"runs {wrong[0]}" if wrong else f"never runs {missing[0]}"
                return (f"in recorded step {i} an experts scope {said}: that is not the {request['backend']} backend "
                        "(pin it with model.set_experts_implementation before the warm-up)")
    return None


def capture_records_the_steps(probe, rng: np.random.Generator) -> str | None:
    """Exactly the requested number of recorded steps, each one decode forward of one new token
    per sequence, the cache growing by one per step, the same operators in each."""
    return _each_capture(probe, rng, _steps_problem, 1)


def capture_is_warm(probe, rng: np.random.Generator) -> str | None:
    """No prefill and no compilation in the window, and at least CAPTURE_MIN_WARMUP decode steps before it."""
    return _each_capture(probe, rng, _warm_problem, 1)


def capture_pins_the_backend(probe, rng: np.random.Generator) -> str | None:
    """Every experts scope of every recorded step runs the requested backend's operators, for two
    backends (so one at least is not the model's default)."""
    return _each_capture(probe, rng, _backend_problem, 2)


def _agreement_problem(probe, trace: dict) -> str | None:
    """The submission's own reading of its trace (kernel_rows, categorize, step_walls, breakdown)
    against the reference's reading of the same trace."""
    ref = reference()
    rows = probe.submission("kernel_rows", {"trace": trace})["rows"]
    labels = probe.submission("categorize", {"rows": rows})["categories"]
    walls = probe.submission("step_walls", {"trace": trace})["walls"]
    table = probe.submission("breakdown", {"rows": rows, "categories": labels, "walls": walls})["table"]
    problem = _table_problem(table)
    if problem:
        return f"your breakdown of it: {problem}"
    want_rows = ref.kernel_rows(trace)
    want = ref.breakdown(want_rows, ref.categorize(want_rows), ref.step_walls(trace))
    for key in ("busy_us", "wall_us"):
        if not math.isclose(table[key], want[key], rel_tol=CAPTURE_AGREEMENT["relative"]):
            return f"your breakdown of it gives {key} {table[key]:.1f}, the grader's reading {want[key]:.1f}"
    worst = max(want["shares"], key=lambda c: abs(table["shares"][c] - want["shares"][c]))
    if abs(table["shares"][worst] - want["shares"][worst]) > CAPTURE_AGREEMENT["share"]:
        return (f"your breakdown of it gives {worst} {table['shares'][worst]:.1%} of device time, the grader's "
                f"reading {want['shares'][worst]:.1%}")
    return None


def capture_on_the_gpu(probe, rng: np.random.Generator) -> str | None:
    """On a GPU, at real per-layer sizes: every capture check with kernels (the same kernels in
    every step, a small step-time spread), then the submission's breakdown of its own trace
    agrees with the grader's reading of it."""
    for request in _capture_requests(rng, "cuda", 2):
        trace = probe.submission("capture", request)["trace"]
        facts = capture_facts(trace)
        problem = facts if isinstance(facts, str) else _identity_problem(request, facts)
        for judge in (_steps_problem, _warm_problem, _backend_problem):
            problem = problem or judge(request, facts, True)
        problem = problem or _agreement_problem(probe, well_formed_trace(trace))
        if problem:
            return f"{_asked(request)}: {problem}"
    return None
