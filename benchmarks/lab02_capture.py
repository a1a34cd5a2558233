"""Re-take lab-02's decode-step captures in one run: three MoE architectures, four experts backends.

For Mixtral, DeepSeek-V3 and OLMoE (transformers' own model code, random weights at the flagship
checkpoint's per-layer sizes, few layers), each experts backend (transformers' ``grouped_mm``,
``batched_mm`` and ``eager``, and ``lab05``: lab-05's reference ``fused_moe`` registered as a
backend), batch 1 and 64: prefill a distinct random prompt per sequence, step decode by hand with
a ``DynamicCache`` (never ``generate()``), warm up, and record ``--steps`` decode steps under
torch.profiler, every module's forward annotated ``module:<dotted name>:<class>``. ``__cold``
captures record from the first decode step after prefill instead. Configurations are built in
code (nothing reaches for the hub). The capture method is lab-02's own (the capture section of its
solution.py), so a re-taken capture and a reference capture are taken by the same code.

    python benchmarks/lab02_capture.py OUT [--models mixtral,deepseek_v3,olmoe]
        [--backends grouped_mm,batched_mm,eager,lab05] [--batches 1,64] [--steps 5] [--warmup 4]
        [--prompt-len 32] [--cold lab05:1] [--tiny] [--budget-s 450]

On a GPU it captures the real per-layer sizes in bf16; on a machine without CUDA (or with
``--tiny``) tiny configurations of the same architectures in float32, with ``lab05`` in Triton's
interpreter. It writes into OUT, at most eight files, each under ``--max-file-mb``:
``manifest.json`` (device, driver, versions, every capture with its step wall times, every
failure with its reason) and ``captures-N.tar`` (``<model>/<model>__b<batch>__<backend>[__cold]
.json.gz`` and ``<model>/config.json``), then prints a summary table last. Exit status 0 when
every capture was taken or failed for a recorded reason (out of memory, the time budget), 1 when
none was, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASE = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels"
LAB05_SOLUTION = PHASE / "lab-05-fused-moe-kernel" / "solution.py"
LAB02_SOLUTION = PHASE / "lab-02-profile-fused-moe" / "solution.py"

# The flagship checkpoints' per-layer sizes are transformers' default configs; only depth changes
# (and DeepSeek-V3's first dense layers, so that two of its three layers are MoE layers).
ARCHITECTURES = {
    "mixtral": {"model_type": "mixtral", "num_hidden_layers": 4, "max_position_embeddings": 4096},
    "deepseek_v3": {"model_type": "deepseek_v3", "num_hidden_layers": 3, "first_k_dense_replace": 1},
    "olmoe": {"model_type": "olmoe", "num_hidden_layers": 4},
}
# The same architectures (router, experts layout, attention kind) at sizes a CPU steps in
# milliseconds: what the CPU run and the tests capture.
_TINY_COMMON = {"hidden_size": 64, "vocab_size": 512, "max_position_embeddings": 256, "num_hidden_layers": 2,
                "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
TINY = {
    "mixtral": {"model_type": "mixtral", **_TINY_COMMON, "intermediate_size": 96, "num_local_experts": 8,
                "num_experts_per_tok": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    "deepseek_v3": {"model_type": "deepseek_v3", **_TINY_COMMON, "first_k_dense_replace": 1,
                    "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 16, "n_group": 4,
                    "topk_group": 2, "num_experts_per_tok": 4, "n_shared_experts": 1, "num_attention_heads": 4,
                    "num_key_value_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
                    "qk_nope_head_dim": 16, "v_head_dim": 16, "head_dim": 8},
    "olmoe": {"model_type": "olmoe", **_TINY_COMMON, "intermediate_size": 32, "num_experts": 16,
              "num_experts_per_tok": 4, "num_attention_heads": 4, "num_key_value_heads": 4},
}
BACKENDS = ("grouped_mm", "batched_mm", "eager", "lab05")
# generate() prefills with grouped_mm and decodes with batched_mm on a GPU, because batched_mm's
# prefill gathers a whole expert weight matrix per (token, expert) pair (256-896 GiB at batch 64).
PREFILL_BACKEND = {"batched_mm": "grouped_mm"}


def load_lab02():
    """lab-02's solution.py: its capture section is the capture method (build_model, the module
    annotations, decode_capture); its reading functions import nothing heavy."""
    spec = importlib.util.spec_from_file_location("lab02_solution", LAB02_SOLUTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# The run: every capture asked for, its failures recorded, packed for the device tool.


def register_lab05() -> None:
    """lab-05's reference fused_moe as the experts backend ``lab05`` (transformers' gate_up_proj
    (E, 2I, H) gate rows first and down_proj (E, H, I) are lab-05's w1 and w2)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    spec = importlib.util.spec_from_file_location("lab05_solution", LAB05_SOLUTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def lab05_experts(self, hidden_states, top_k_index, top_k_weights):
        return module.fused_moe(hidden_states, self.gate_up_proj, self.down_proj, top_k_weights.float(), top_k_index)

    ALL_EXPERTS_FUNCTIONS.register("lab05", lab05_experts)


def capture_name(model: str, batch: int, backend: str, cold: bool) -> str:
    return f"{model}__b{batch}__{backend}" + ("__cold" if cold else "")


def plan(models, backends, batches, cold) -> list[tuple[str, int, str, bool]]:
    """(model, batch, backend, cold) in run order: per model its cold captures first (nothing of
    its decode shapes has run yet), then backend by backend."""
    runs = []
    for model in models:
        runs += [(model, b, be, True) for be, b in cold if be in backends]
        runs += [(model, b, be, False) for be in backends for b in batches]
    return runs


def device_info(cuda: bool) -> dict:
    import torch

    info = {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
    }
    for name in ("transformers", "triton", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - a missing or broken module is recorded, not fatal
            info[name] = f"unavailable ({exc.__class__.__name__})"
    if cuda:
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
            info["nvidia_smi"] = smi.stdout.strip()
            info["driver"] = smi.stdout.split(",")[1].strip()
        except (OSError, subprocess.SubprocessError, IndexError) as exc:
            info["nvidia_smi"] = f"unavailable ({exc.__class__.__name__})"
    return info


def step_counts(trace: dict, cuda: bool) -> dict:
    """Recorded steps, and per step the kernels (GPU) or CPU operators (CPU) launched in it: a
    sanity figure for the summary, not lab-02's reading of the trace."""
    events = trace.get("traceEvents", [])
    steps = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith("ProfilerStep#"))
    if cuda:
        launches = {e["args"]["correlation"]: e["ts"] for e in events
                    if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
        times = [launches[e["args"]["correlation"]] for e in events
                 if e.get("cat") == "kernel" and e.get("args", {}).get("correlation") in launches]
    else:
        times = [e["ts"] for e in events if e.get("cat") == "cpu_op"]
    per_step = [sum(lo <= t <= hi for t in times) for lo, hi in steps]
    return {"recorded_steps": len(steps), ("kernels_per_step" if cuda else "cpu_ops_per_step"): per_step}


def pack(staged: Path, out: Path, limit_bytes: int, max_files: int) -> tuple[list[dict], list[dict]]:
    """Staged files into ``captures-N.tar`` under OUT, each under limit_bytes; returns (the tars and
    their members, the files left out and why)."""
    tars: list[dict] = []
    left_out: list[dict] = []
    current: tarfile.TarFile | None = None
    size = 0
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        member = path.relative_to(staged).as_posix()
        need = path.stat().st_size + 1536  # the header and padding of one member
        if need + 1024 > limit_bytes:
            left_out.append({"file": member, "why": f"{need} bytes, over the {limit_bytes}-byte file limit"})
            continue
        if current is None or size + need + 1024 > limit_bytes:
            if current is not None:
                current.close()
            if len(tars) == max_files:
                left_out.append({"file": member, "why": f"the {max_files} tar files allowed are full"})
                current = None
                continue
            tars.append({"tar": f"captures-{len(tars) + 1}.tar", "members": []})
            current = tarfile.open(out / tars[-1]["tar"], "w")  # noqa: SIM115 - closed when the next opens, or at the end
            size = 0
        current.add(path, arcname=member)
        tars[-1]["members"].append(member)
        size += need
    if current is not None:
        current.close()
    return tars, left_out


def summary_table(captures: list[dict], cuda: bool) -> str:
    unit = "kernels/step" if cuda else "cpu ops/step"
    rows = [f"| capture | {unit} | step ms (median) | spread (max/min) | gz KB | took s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in captures:
        name = c["name"]
        if "error" in c:
            rows.append(f"| {name} | failed: {c['error'][:90]} | | | | |")
            continue
        walls = c["step_wall_s"]
        counts = c.get("kernels_per_step") or c.get("cpu_ops_per_step") or [0]
        count = str(counts[0]) if len(set(counts)) == 1 else "-".join(map(str, (min(counts), max(counts))))
        rows.append(f"| {name} | {count} | {statistics.median(walls) * 1e3:.1f} | {max(walls) / min(walls):.2f} "
                    f"| {c['gz_bytes'] / 1024:.0f} | {c['took_s']:.1f} |")
    return "\n".join(rows)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="folder for manifest.json and captures-N.tar ($OUT on the GPU machine)")
    p.add_argument("--models", default=",".join(ARCHITECTURES), help="comma-separated, of " + ", ".join(ARCHITECTURES))
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, of " + ", ".join(BACKENDS))
    p.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    p.add_argument("--steps", type=int, default=5, help="recorded decode steps per capture")
    p.add_argument("--warmup", type=int, default=4, help="unrecorded decode steps before the profiler starts")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per sequence")
    p.add_argument("--cold", default="lab05:1",
                   help="BACKEND:BATCH pairs (comma-separated, or 'none') also captured cold: from the first decode step")
    p.add_argument("--tiny", action="store_true", help="tiny configurations even on a GPU (always without CUDA)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="start no capture after this many seconds of the run (the rest are recorded as not taken)")
    p.add_argument("--max-file-mb", type=float, default=15.0, help="size limit of each file written into OUT")
    p.add_argument("--max-files", type=int, default=7, help="tar files at most (manifest.json is one more)")
    args = p.parse_args(argv)

    def listed(value, known, what):
        items = [v for v in value.split(",") if v]
        unknown = [v for v in items if v not in known]
        if unknown or not items:
            p.error(f"--{what}: {', '.join(unknown) or 'nothing'} not among {', '.join(known)}")
        return items

    args.models = listed(args.models, ARCHITECTURES, "models")
    args.backends = listed(args.backends, BACKENDS, "backends")
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
        cold = [] if args.cold == "none" else [c.split(":") for c in args.cold.split(",")]
        args.cold = [(be, int(b)) for be, b in cold]
    except ValueError:
        p.error("--batches takes integers; --cold takes BACKEND:BATCH pairs")
    if any(b < 1 for b in args.batches) or args.steps < 1 or args.warmup < 0 or args.prompt_len < 1:
        p.error("batches, --steps and --prompt-len must be at least 1, --warmup at least 0")
    if any(be not in BACKENDS for be, _ in args.cold):
        p.error(f"--cold: backends are {', '.join(BACKENDS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs are built in code; never the hub
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        # lab-05's kernels run in Triton's interpreter on the CPU; it must be set before triton loads.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        torch.set_num_threads(1)
    device = "cuda" if cuda else "cpu"
    tiny = args.tiny or not cuda
    configs = {m: (TINY if tiny else ARCHITECTURES)[m] for m in args.models}
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "taken": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **device_info(cuda),
        "sizes": "tiny (CPU test configurations)" if tiny else "real per-layer sizes, few layers",
        "dtype": "bfloat16" if cuda else "float32",
        "attention": "sdpa",
        "annotation": "module:<dotted module name>:<class name>, one per module forward",
        "method": {"steps": args.steps, "decode_steps_before_profiling": args.warmup, "prompt_len": args.prompt_len,
                   "schedule": "wait=0, warmup=1, active=steps; cold: no decode step before profiling, warmup=0",
                   "prefill_backend": PREFILL_BACKEND, "record_shapes": True,
                   "step_wall_s": "time.perf_counter around each recorded step, device synchronised"},
        "captures": [],
        "failed": [],
    }
    import transformers  # noqa: F401 - the versions above; the import itself is part of the run

    lab02 = load_lab02()

    lab05_problem = None
    if "lab05" in args.backends:
        try:
            if not cuda:
                # Triton 3.6's interpreter with NumPy 2.4: the worker's repair (its docstring says why).
                sys.path.insert(0, str(ROOT))
                from grader.sandbox.boot.worker import repair_interpreter

                repair_interpreter()
            register_lab05()
        except Exception as exc:  # noqa: BLE001 - recorded, and the other backends still run
            lab05_problem = f"lab05 backend unavailable: {exc.__class__.__name__}: {exc}"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        model_name, model = None, None
        for name, batch, backend, cold in plan(args.models, args.backends, args.batches, args.cold):
            entry = {"name": capture_name(name, batch, backend, cold), "model": name, "batch": batch,
                     "backend": backend, "cold": cold}
            if backend == "lab05" and lab05_problem:
                manifest["failed"].append({**entry, "error": lab05_problem})
                continue
            if time.perf_counter() - started > args.budget_s:
                manifest["failed"].append({**entry, "error": f"not taken: the run's {args.budget_s:.0f} s budget was spent"})
                continue
            t0 = time.perf_counter()
            try:
                if model_name != name:
                    model = None
                    if cuda:
                        torch.cuda.empty_cache()
                    model = lab02.build_model(configs[name], device)
                    model_name = name
                    (staged / name).mkdir(exist_ok=True)
                    (staged / name / "config.json").write_text(model.config.to_json_string(use_diff=False))
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                trace, walls = lab02.decode_capture(
                    model, backend, batch, args.prompt_len, args.steps,
                    warmup=0 if cold else args.warmup, profiler_warmup=0 if cold else 1,
                    prefill_backend=PREFILL_BACKEND.get(backend))
            except Exception as exc:  # noqa: BLE001 - out of memory and the like: recorded, the run goes on
                message = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]
                manifest["failed"].append({**entry, "error": message, "took_s": round(time.perf_counter() - t0, 2)})
                if not isinstance(exc, torch.cuda.OutOfMemoryError):
                    manifest["failed"][-1]["traceback"] = traceback.format_exc(limit=4)[-1500:]
                if cuda:
                    torch.cuda.empty_cache()
                if model_name != name:
                    model_name, model = None, None
                continue
            data = json.dumps(trace, separators=(",", ":")).encode()
            file = f"{name}/{entry['name']}.json.gz"
            (staged / file).write_bytes(gzip.compress(data, 6, mtime=0))
            entry.update({
                "file": file, "prefill_backend": PREFILL_BACKEND.get(backend, backend), "steps": args.steps,
                "unrecorded_decode_steps": 0 if cold else args.warmup + 1, "step_wall_s": walls,
                **step_counts(trace, cuda), "trace_bytes": len(data), "gz_bytes": (staged / file).stat().st_size,
                "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                "took_s": round(time.perf_counter() - t0, 2),
            })
            manifest["captures"].append(entry)
            print(f"{entry['name']}: {statistics.median(walls) * 1e3:.1f} ms/step, {entry['took_s']} s", flush=True)
        model = None
        tars, left_out = pack(staged, args.out, int(args.max_file_mb * 2**20), args.max_files)
    for tar in tars:
        for c in manifest["captures"]:
            if c["file"] in tar["members"]:
                c["tar"] = tar["tar"]
    manifest["tars"] = tars
    manifest["left_out"] = left_out
    manifest["took_s"] = round(time.perf_counter() - started, 1)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print()
    print(f"{manifest['device']}, torch {manifest['torch']}, transformers {manifest['transformers']}, "
          f"triton {manifest['triton']}; {manifest['sizes']}; {manifest['took_s']} s")
    print(summary_table(manifest["captures"] + manifest["failed"], cuda))
    print(f"{len(manifest['captures'])} captured, {len(manifest['failed'])} failed or not taken, "
          f"{len(left_out)} left out; {', '.join(t['tar'] for t in tars) or 'no tar'} and manifest.json in {args.out}")
    return 0 if manifest["captures"] else 1


if __name__ == "__main__":
    sys.exit(main())
