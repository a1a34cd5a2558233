"""lab-05 on the GPU, in one call: check, (optionally) tune, and time the reference fused MoE
against its peers.

For Mixtral-like (E=8, k=2, H=4096, I=14336) and DeepSeek-V3-like (E=256, k=8, H=7168, I=2048)
experts at 1, 8, 64, 512 and 4096 tokens, bf16, on whatever GPU it runs on:

* measures that GPU's ceilings at the start and at the end of the run (grader/hardware.py, the
  grader's own calibration: the fastest of several kernels that read a 2 GiB buffer once, bytes
  counted as lab.py's work() counts them, and a bf16 torch.mm) and reads its datasheet;
* checks every method against a float32 oracle (relative Frobenius error, at most 2e-2) before
  timing it: the reference solution, vLLM's Triton fused_moe (the best of a small config sweep,
  with vLLM's own Triton align or the lab's, which lays out the same; extracted standalone in
  .device/vllm/vllm_fused_moe.py, which is carried to the GPU machine and never committed),
  torch._grouped_mm with torch glue, and a naive per-expert loop;
* times each as the median of triton.testing.do_bench (L2 flushed before each run), as CUDA-graph
  replays where the method allows;
* prints per cell: the floor (max(FLOPs / bf16 rate, bytes / read bandwidth), measured at the
  start), each method's us, % of the floor, ours / vLLM; then the goal of issue 23, cell by cell
  (no cell slower than vLLM, geometric mean at least 1.15x faster, memory-bound cells at 95% of
  the floor, Mixtral 4096 at 80% of the dense bf16 rate);
* with --tune, sweeps tile configurations per cell (GEMM 1, then GEMM 2; TMA and persistent
  variants among them) and writes the CONFIGS table of this GPU to OUT/moe_configs.json
  (--apply FILE, on any machine, puts it in solution.py).

    python benchmarks/moe_gpu.py [--tune] [--models mixtral,deepseek_v3] [--tokens 1,8,64,512,4096] [--out DIR]
    python benchmarks/moe_gpu.py --apply OUT/moe_configs.json   # no GPU needed
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from grader import hardware  # noqa: E402
from grader.errors import InfrastructureError  # noqa: E402

SOLUTION = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-05-fused-moe-kernel" / "solution.py"
VLLM = ROOT / ".device" / "vllm" / "vllm_fused_moe.py"
MODELS = {"mixtral": (8, 2, 4096, 14336), "deepseek_v3": (256, 8, 7168, 2048)}
MAX_REL_ERR = 2e-2
# --dry-run: every path of this script on a CPU, through Triton's interpreter, at tiny sizes in
# float32 (the interpreter's bf16 tl.dot is wrong). Its times mean nothing; it proves the code.
DRY = {"models": {"mixtral": (8, 2, 64, 96), "deepseek_v3": (16, 4, 64, 32)}, "tokens": "1,8,40"}
DEVICE, DTYPE = "cuda", torch.bfloat16


def load_solution():
    spec = importlib.util.spec_from_file_location("lab05_solution", SOLUTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_vllm():
    """vLLM's kernel, extracted (see the module docstring), or (None, why not)."""
    if not VLLM.exists():
        return None, f"{VLLM.relative_to(ROOT)} is not here (carry .device/vllm to the GPU machine)"
    try:
        spec = importlib.util.spec_from_file_location("vllm_fused_moe", VLLM)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken extraction must not stop the others' timings
        return None, f"{VLLM.name} failed to import: {type(exc).__name__}: {exc}"
    return module, ""


def vllm_candidates(V, model, E, k, H, I, T):
    """The small sweep for vLLM's kernel: its default config, its tuned H200 Mixtral entry for the
    nearest M (the only tuned bf16 file for these shapes), and hand-picked ones per regime."""
    c = V._c
    out = [("default", V.get_default_config(T, E, I, H, k)), ("H200 JSON", V.nearest(V.H200_MIXTRAL, T))]
    if T * k / E <= 24:
        out += [(f"sweep {i}", cfg) for i, cfg in enumerate([c(16, 64, 128, 1, 4, 4), c(16, 128, 128, 1, 4, 5),
                                                            c(16, 64, 256, 1, 4, 3), c(32, 128, 128, 16, 4, 3)])]  # fmt: skip
    else:
        out += [(f"sweep {i}", cfg) for i, cfg in enumerate([c(64, 128, 64, 8, 4, 3), c(128, 128, 64, 16, 8, 4),
                                                            c(128, 256, 64, 16, 8, 4), c(64, 256, 64, 16, 8, 4)])]  # fmt: skip
    seen, unique = set(), []
    for name, cfg in out:
        key = tuple(sorted(cfg.items()))
        if key not in seen:
            seen.add(key)
            unique.append((name, cfg))
    return unique


def best_vllm(V, S, model, x, w1, w2, weights, ids, ref, rep_ms):
    """vLLM's best time over the sweep and both aligns: (us, iqr, what ran, every candidate's time)."""
    E, H, I, k, T = w1.shape[0], w1.shape[2], w2.shape[2], ids.shape[1], x.shape[0]
    lab_align = lambda flat, bm, e: S.moe_align_block_size(flat, e, bm)  # noqa: E731
    tried, best = [], None
    for name, cfg in vllm_candidates(V, model, E, k, H, I, T):
        label = "{BLOCK_SIZE_M}/{BLOCK_SIZE_N}/{BLOCK_SIZE_K}/G{GROUP_SIZE_M}".format(**cfg)
        label += f"/w{cfg.get('num_warps', 4)}/s{cfg.get('num_stages', 3)}"
        for align_name, align in (("vLLM align", None), ("lab align", lab_align)):
            fn = lambda cfg=cfg, align=align: V.fused_experts(x, w1, w2, weights, ids, cfg, align)  # noqa: E731
            try:
                err = rel_err(fn(), ref)
                if err > MAX_REL_ERR:
                    tried.append({"config": label, "source": name, "align": align_name, "error": f"rel err {err:.1e}"})
                    continue
                us, iqr, _ = bench(fn, True, rep_ms)
            except Exception as exc:
                tried.append({"config": label, "source": name, "align": align_name, "error": f"{type(exc).__name__}: {str(exc)[:120]}"})
                continue
            tried.append({"config": label, "source": name, "align": align_name, "us": round(us, 1), "rel_err": err})
            if best is None or us < best[0]:
                best = (us, iqr, f"{label} ({name}, {align_name})", err)
    return best, tried


def make_inputs(E, k, H, I, T, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(T, H, device=DEVICE, dtype=DTYPE, generator=g)
    logits = torch.randn(T, E, device=DEVICE, generator=g)
    weights, ids = torch.topk(torch.softmax(logits, -1), k)
    weights = (weights / weights.sum(-1, keepdim=True)).float()
    return x, weights, ids.to(torch.int32)


def make_weights(E, H, I, seed=1):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    w1 = torch.randn(E, 2 * I, H, device=DEVICE, dtype=DTYPE, generator=g) * H**-0.5
    w2 = torch.randn(E, H, I, device=DEVICE, dtype=DTYPE, generator=g) * I**-0.5
    return w1, w2


def oracle(x, w1, w2, weights, ids):
    """float32 reference, one expert at a time (never the whole weight tensor in float32)."""
    T, H = x.shape
    I = w2.shape[2]
    out = torch.zeros(T, H, device=x.device, dtype=torch.float32)
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        xe = x[tok].float()
        gate_up = xe @ w1[e].float().T
        h = F.silu(gate_up[:, :I]) * gate_up[:, I:]
        out.index_add_(0, tok, (h @ w2[e].float().T) * weights[tok, slot, None])
    return out


def naive(x, w1, w2, weights, ids):
    """Per-expert torch loop (index_select, matmul, index_add), as a first attempt would be."""
    I = w2.shape[2]
    out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    for e in range(w1.shape[0]):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        gate_up = x.index_select(0, tok) @ w1[e].T
        h = F.silu(gate_up[:, :I]) * gate_up[:, I:]
        out.index_add_(0, tok, (h @ w2[e].T).float() * weights[tok, slot, None])
    return out.to(x.dtype)


def grouped_mm(x, w1, w2, weights, ids):
    """torch._grouped_mm (CUTLASS grouped GEMM on sm90) with torch glue for permute and combine."""
    E = w1.shape[0]
    k = ids.shape[1]
    I = w2.shape[2]
    flat = ids.reshape(-1)
    order = torch.argsort(flat)
    counts = torch.zeros(E, dtype=torch.int64, device=x.device).scatter_add_(0, flat.long(), torch.ones_like(flat, dtype=torch.int64))
    offs = torch.cumsum(counts, 0).to(torch.int32)
    tok = order // k
    xs = x.index_select(0, tok)
    gate_up = torch._grouped_mm(xs, w1.transpose(-2, -1), offs=offs)
    h = F.silu(gate_up[:, :I]) * gate_up[:, I:]
    y = torch._grouped_mm(h, w2.transpose(-2, -1), offs=offs)
    out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    out.index_add_(0, tok, y.float() * weights.reshape(-1)[order, None])
    return out.to(x.dtype)


def work(E, k, H, I, T, ids):
    """FLOPs and least bytes of one call (as lab.py's work()), and the experts the routing touches."""
    touched = torch.unique(ids).numel()
    flops = 6.0 * T * k * H * I
    nbytes = touched * 3.0 * H * I * 2 + 2.0 * T * H * 2
    return flops, nbytes, touched


def bench(fn, graph: bool, rep_ms: int) -> tuple[float, float, bool]:
    """Median and IQR in microseconds of do_bench (L2 flushed before each run); graph replays if possible."""
    if DEVICE == "cpu":  # the dry run: one call on the host clock
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e6, 0.0, False
    fn()
    torch.cuda.synchronize()
    target = fn
    used_graph = False
    if graph:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()
            torch.cuda.current_stream().wait_stream(stream)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            target = g.replay
            used_graph = True
        except Exception as exc:  # not capturable (host syncs): time eagerly and say so
            print(f"    (no CUDA graph: {type(exc).__name__}: {str(exc)[:80]})", flush=True)
            torch.cuda.synchronize()
    times = triton.testing.do_bench(target, warmup=max(rep_ms // 4, 5), rep=rep_ms, return_mode="all")
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), statistics.median(times), max(times)]
    return statistics.median(times) * 1e3, (q[2] - q[0]) * 1e3, used_graph


def rel_err(out, ref):
    return ((out.float() - ref).norm() / ref.norm()).item()


# Curated candidates. GEMM 1: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages, INTERLEAVE, PERSISTENT[, TMA]);
# GEMM 2: (BLOCK_N, BLOCK_K, warps, stages, SPLIT_K, PERSISTENT[, TMA]). BLOCK_M and GROUP_M are set per
# regime. The TMA ones load the weight tiles through tensor descriptors (solution.py falls back to
# pointer loads where that cannot run).
DECODE_1 = [
    (16, 32, 256, 4, 4, 0, 0), (16, 64, 128, 4, 4, 0, 0), (16, 64, 256, 4, 4, 0, 0), (16, 32, 128, 4, 5, 0, 0),
    (16, 32, 256, 4, 4, 1, 0), (16, 64, 128, 4, 4, 1, 0), (16, 32, 128, 4, 5, 1, 0), (32, 64, 128, 4, 4, 0, 0),
    (32, 32, 256, 4, 4, 1, 0), (16, 128, 128, 8, 4, 0, 0), (16, 64, 128, 4, 4, 0, 0, 1), (16, 32, 256, 4, 4, 0, 0, 1),
]
DECODE_2 = [
    (64, 128, 4, 4, 1, 0), (64, 128, 4, 4, 2, 0), (64, 128, 4, 4, 4, 0), (128, 128, 8, 4, 4, 0), (64, 256, 4, 4, 2, 0),
    (32, 128, 4, 4, 4, 0), (32, 256, 4, 4, 2, 0), (128, 128, 4, 4, 2, 0), (64, 128, 4, 5, 2, 0),
    (64, 128, 4, 4, 2, 0, 1), (128, 128, 4, 4, 1, 0, 1),
]
PREFILL_1 = [
    (128, 64, 64, 8, 4, 1, 0), (128, 128, 64, 8, 3, 1, 0), (128, 128, 64, 8, 4, 1, 0), (64, 128, 64, 4, 4, 1, 0),
    (128, 64, 64, 8, 4, 1, 1), (128, 128, 64, 8, 3, 1, 1), (128, 128, 64, 8, 4, 0, 0), (64, 256, 64, 8, 3, 0, 0),
    (128, 64, 128, 8, 3, 1, 0), (64, 64, 128, 4, 4, 1, 0), (128, 128, 64, 8, 4, 0, 1), (256, 64, 64, 8, 3, 1, 0),
    (128, 128, 64, 8, 4, 0, 0, 1), (128, 128, 64, 8, 4, 0, 1, 1), (64, 128, 64, 4, 4, 0, 0, 1),
]
PREFILL_2 = [
    (128, 64, 8, 3, 1, 0), (256, 64, 8, 3, 1, 0), (256, 64, 8, 4, 1, 0), (128, 64, 4, 4, 1, 0), (128, 128, 8, 3, 1, 0),
    (256, 64, 8, 3, 1, 1), (128, 64, 8, 4, 1, 1), (64, 128, 4, 4, 1, 0), (128, 64, 8, 4, 2, 0), (256, 64, 8, 3, 2, 0),
    (128, 64, 8, 4, 1, 0, 1), (256, 64, 8, 3, 1, 1, 1),
]


def _gemm1(c, group):
    bm, bn, bk, w, s, il, p, *tma = c
    return (bm, bn, bk, group, w, s, il, p, *tma)


def gemm1_candidates(T, E, k):
    per_expert = T * k / E
    if per_expert <= 48:
        return [_gemm1(c, 1) for c in DECODE_1]
    out = [_gemm1(c, 8) for c in PREFILL_1]
    return out + [_gemm1(c, g) for c in PREFILL_1[:3] for g in (16, 32)]


def gemm2_candidates(bm, T):
    group = 1 if bm <= 32 else 8
    return [(bm, bn, bk, group, w, s, split, p, *tma) for bn, bk, w, s, split, p, *tma in (DECODE_2 if bm <= 32 else PREFILL_2)]


def tune_cell(S, x, w1, w2, weights, ids, ref, rep_ms, budget_s):
    """The fastest GEMM 1 config (with the current GEMM 2), then the fastest GEMM 2 with it; a
    candidate whose answer is off the oracle (or that fails to compile) is never chosen."""
    E, H, I = w1.shape[0], w1.shape[2], w2.shape[2]
    T = x.shape[0]
    start = time.time()
    base1, base2 = S.pick_config(T, E, H, I, S.device_name(x.device), ids.shape[1])

    def timed(c1, c2):
        fn = lambda: S.fused_moe(x, w1, w2, weights, ids, config=(c1, c2))  # noqa: E731
        err = rel_err(fn(), ref)
        if err > MAX_REL_ERR:
            raise ValueError(f"rel err {err:.1e}")
        return bench(fn, True, rep_ms)[0]

    results = []
    for c1 in gemm1_candidates(T, E, ids.shape[1]):
        if time.time() - start > budget_s / 2:
            break
        try:
            results.append((timed(c1, (c1[0],) + tuple(base2[1:8])), c1))
        except Exception as exc:
            print(f"    gemm1 {c1}: {type(exc).__name__}: {str(exc)[:100]}", flush=True)
    results.sort()
    best1 = results[0][1] if results else base1
    results2 = []
    for c2 in gemm2_candidates(best1[0], T):
        if time.time() - start > budget_s:
            break
        try:
            results2.append((timed(best1, c2), c2))
        except Exception as exc:
            print(f"    gemm2 {c2}: {type(exc).__name__}: {str(exc)[:100]}", flush=True)
    results2.sort()
    best2 = results2[0][1] if results2 else (best1[0],) + tuple(base2[1:8])
    out = S.fused_moe(x, w1, w2, weights, ids, config=(best1, best2))
    return best1, best2, rel_err(out, ref), len(results) + len(results2)


def table_entry(tuned: dict[str, list]) -> dict[tuple[int, int, int], list]:
    """--tune's cells as a CONFIGS table: each cell's config serves up to its token count, the
    largest cell's serves every count above."""
    out = {}
    for key, cells in tuned.items():
        E, H, I = (int(v) for v in key.split(","))
        cells = sorted(cells)
        out[(E, H, I)] = [
            (1 << 30 if i == len(cells) - 1 else T, tuple(c1), tuple(c2)) for i, (T, c1, c2) in enumerate(cells)
        ]
    return out


def format_configs(tuned_on: dict[str, str], configs: dict) -> str:
    """The BEGIN/END CONFIGS block of solution.py, written the way a person would."""
    lines = ["# BEGIN CONFIGS", "TUNED_ON = {"]
    lines += [f"    {json.dumps(device)}: {json.dumps(text)}," for device, text in tuned_on.items()]
    lines += ["}", "CONFIGS: dict[str, dict[tuple[int, int, int], list[tuple[int, tuple[int, ...], tuple[int, ...]]]]] = {"]
    for device, table in configs.items():
        if not table:
            lines.append(f"    {json.dumps(device)}: {{}},")
            continue
        lines.append(f"    {json.dumps(device)}: {{")
        for shape, rows in table.items():
            lines.append(f"        {tuple(shape)}: [")
            for limit, c1, c2 in rows:
                lines.append(f"            ({'1 << 30' if limit >= 1 << 30 else limit}, {tuple(c1)}, {tuple(c2)}),")
            lines.append("        ],")
        lines.append("    },")
    return "\n".join(lines + ["}", "# END CONFIGS", ""])


def apply(path: Path) -> None:
    """Put the table --tune wrote (path) into solution.py, for the GPU it was tuned on."""
    data = json.loads(path.read_text())
    S = load_solution()
    configs = dict(S.CONFIGS)
    tuned_on = dict(S.TUNED_ON)
    configs[data["device"]] = table_entry(data["configs"])
    tuned_on[data["device"]] = data["tuned_on"]
    block = format_configs(tuned_on, configs)
    text = SOLUTION.read_text()
    new, count = re.subn(r"# BEGIN CONFIGS\n.*?# END CONFIGS\n", lambda _: block, text, flags=re.S)
    if count != 1:
        sys.exit(f"{SOLUTION}: no single '# BEGIN CONFIGS' ... '# END CONFIGS' block to replace")
    SOLUTION.write_text(new)
    print(f"{SOLUTION}: CONFIGS for {data['device']} ({data['tuned_on']})")


def ceilings_now() -> dict:
    """The grader's calibration, measured now (not the cached one)."""
    if DEVICE == "cpu":
        return {"read_tbps": 0.001, "bf16_tflops": 0.001, "source": "dry run: no ceilings", "bandwidth": 1e9, "rate": 1e9}
    c = hardware.measured_ceilings(("bfloat16",), again=True)
    return {"read_tbps": round(c.bandwidth / 1e12, 3), "bf16_tflops": round(c.rates["bfloat16"] / 1e12, 1), "source": c.source,
            "bandwidth": c.bandwidth, "rate": c.rates["bfloat16"]}  # fmt: skip


def goal_lines(cells: list[dict], dense_tflops: float) -> list[str]:
    """Issue 23's goal, cell by cell, from this run's numbers only."""
    out = []
    paired = [c for c in cells if c.get("ours_us") and c.get("vllm_us")]
    if paired:
        slower = [f"{c['model']} {c['tokens']}" for c in paired if c["ours_us"] > c["vllm_us"]]
        geo = math.exp(sum(math.log(c["vllm_us"] / c["ours_us"]) for c in paired) / len(paired))
        out.append(f"- no cell slower than vLLM: {'met' if not slower else 'NOT met: ' + ', '.join(slower)} ({len(paired)} cells)")
        out.append(f"- geometric mean of vLLM / ours: {geo:.3f}x ({'met' if geo >= 1.15 else 'NOT met'}: 1.15x wanted)")
    else:
        out.append("- against vLLM: not measured in this run (no vLLM kernel, or no cell where both ran)")
    memory = [c for c in cells if c.get("ours_us") and c["bound"] == "memory"]
    short = [f"{c['model']} {c['tokens']} ({c['ours_pct_floor']}%)" for c in memory if c["ours_pct_floor"] < 95]
    out.append(f"- memory-bound cells at 95% of the floor or better: {'met' if not short else 'NOT met: ' + ', '.join(short)}")
    mix = next((c for c in cells if c["model"] == "mixtral" and c["tokens"] == 4096 and c.get("ours_us")), None)
    if mix:
        pct = 100 * mix["ours_tflops"] / dense_tflops
        out.append(f"- Mixtral 4096 at 80% of the dense bf16 rate ({dense_tflops:.0f} TFLOP/s): {pct:.1f}% ({'met' if pct >= 80 else 'NOT met'})")
    over = [f"{c['model']} {c['tokens']} {m}" for c in cells for m in ("ours", "vllm", "grouped_mm") if (c.get(f"{m}_pct_floor") or 0) > 100]
    out.append(f"- no method above 100% of the floor: {'met' if not over else 'NOT met: ' + ', '.join(over)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--apply", type=Path, help="put the table a --tune run wrote into solution.py, and stop")
    parser.add_argument("--models", default="mixtral,deepseek_v3")
    parser.add_argument("--tokens", default="1,8,64,512,4096")
    parser.add_argument("--rep-ms", type=int, default=100)
    parser.add_argument("--tune-budget-s", type=float, default=25)
    parser.add_argument("--budget-s", type=float, default=540, help="start no new cell after this long")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU through Triton's interpreter")
    args = parser.parse_args()
    if args.apply:
        apply(args.apply)
        return
    global DEVICE, DTYPE
    if args.dry_run:
        if os.environ.get("TRITON_INTERPRET") != "1":
            sys.exit("--dry-run needs TRITON_INTERPRET=1 set before Python starts")
        DEVICE, DTYPE = "cpu", torch.float32
        MODELS.clear()
        MODELS.update(DRY["models"])
        args.models, args.tokens = ",".join(DRY["models"]), DRY["tokens"]
        sys.path.insert(0, str(ROOT / "grader" / "sandbox" / "boot"))
        import worker  # the worker's repair of Triton 3.6's interpreter under NumPy 2.4+

        worker.repair_interpreter()
    started = time.monotonic()
    S = load_solution()
    V, why_not = (None, "--skip-peers") if args.skip_peers else load_vllm()
    if V is None:
        print(f"(vLLM not timed: {why_not})", flush=True)
    device = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (dry run)"
    start_ceil = ceilings_now()
    try:
        sheet = hardware.datasheet_ceilings(device, lambda: hardware.measured_ceilings(("bfloat16",)))
    except InfrastructureError as exc:
        print(f"(no datasheet floor: {exc})", flush=True)
        sheet = None
    header = {
        "date": datetime.date.today().isoformat(),
        **(hardware.gpu_facts() if DEVICE == "cuda" else {"gpu": device}),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "start": {k: v for k, v in start_ceil.items() if k not in ("bandwidth", "rate")},
        "datasheet": sheet.source if sheet else None,
        "reference_configs": S.TUNED_ON.get(device, "no table for this GPU: GENERIC"),
        "vllm": "not timed: " + why_not if V is None else str(VLLM.relative_to(ROOT)),
    }
    print(json.dumps(header), flush=True)
    peak_flops, peak_bytes = start_ceil["rate"], start_ceil["bandwidth"]
    cells, tuned, rows = [], {}, []
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (out_dir / "moe_gpu.json").write_text(json.dumps({"header": header, "cells": cells, "rows": rows, "tuned": tuned}, indent=1))

    stopped = None
    for model in args.models.split(","):
        E, k, H, I = MODELS[model]
        w1, w2 = make_weights(E, H, I)
        for T in [int(t) for t in args.tokens.split(",")]:
            if time.monotonic() - started > args.budget_s:
                stopped = f"stopped before {model} {T}: the budget of {args.budget_s:g} s is spent"
                break
            x, weights, ids = make_inputs(E, k, H, I, T, seed=T)
            flops, nbytes, touched = work(E, k, H, I, T, ids)
            floor_us = max(flops / peak_flops, nbytes / peak_bytes) * 1e6
            bound = "compute" if flops / peak_flops > nbytes / peak_bytes else "memory"
            ref = oracle(x, w1, w2, weights, ids)
            config = None
            if args.tune:
                c1, c2, err, n = tune_cell(S, x, w1, w2, weights, ids, ref, max(args.rep_ms // 4, 10), args.tune_budget_s)
                tuned.setdefault(f"{E},{H},{I}", []).append([T, list(c1), list(c2)])
                print(f"  tuned {model} T={T}: {c1} {c2} err {err:.1e} ({n} configs)", flush=True)
                (out_dir / "moe_configs.json").write_text(json.dumps({
                    "device": device,
                    "tuned_on": f"{header['date']}, one {device}, torch {torch.__version__}, triton {triton.__version__}",
                    "configs": tuned,
                }, indent=1))  # fmt: skip
                config = (c1, c2)
            cell = {"model": model, "tokens": T, "touched": touched, "bound": bound, "floor_us": round(floor_us, 1),
                    "datasheet_floor_us": round(sheet.roofline_us(flops, nbytes, "bfloat16"), 1) if sheet else None}  # fmt: skip
            methods = {"ours": (lambda: S.fused_moe(x, w1, w2, weights, ids, config=config), True)}
            if not args.skip_peers:
                methods["grouped_mm"] = (lambda: grouped_mm(x, w1, w2, weights, ids), True)
                methods["naive"] = (lambda: naive(x, w1, w2, weights, ids), False)
            for name, (fn, graph) in methods.items():
                try:
                    err = rel_err(fn(), ref)
                    if err > MAX_REL_ERR:
                        raise ValueError(f"relative error {err:.1e} against the float32 oracle")
                    us, iqr, used_graph = bench(fn, graph, args.rep_ms)
                except Exception as exc:
                    print(f"  {model} T={T} {name}: FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                    cell[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    continue
                cell.update({f"{name}_us": round(us, 1), f"{name}_iqr_us": round(iqr, 1), f"{name}_rel_err": err,
                             f"{name}_pct_floor": round(100 * floor_us / us, 1), f"{name}_tflops": round(flops / us / 1e6, 1)})  # fmt: skip
                rows.append({"model": model, "tokens": T, "method": name, "us": round(us, 1), "graph": used_graph, "rel_err": err})
            if V is not None:
                best, tried = best_vllm(V, S, model, x, w1, w2, weights, ids, ref, max(args.rep_ms // 2, 20))
                cell["vllm_sweep"] = tried
                if best is not None:
                    us, iqr, what, err = best
                    cell.update({"vllm_us": round(us, 1), "vllm_iqr_us": round(iqr, 1), "vllm_config": what, "vllm_rel_err": err,
                                 "vllm_pct_floor": round(100 * floor_us / us, 1), "vllm_tflops": round(flops / us / 1e6, 1)})  # fmt: skip
            if cell.get("ours_us") and cell.get("vllm_us"):
                cell["ours_over_vllm"] = round(cell["ours_us"] / cell["vllm_us"], 3)
            cells.append(cell)
            print("  " + json.dumps({k: v for k, v in cell.items() if k != "vllm_sweep"}), flush=True)
            save()
        w1 = w2 = None  # free the weights before the next model
        torch.cuda.empty_cache()
        if stopped:
            break
    end_ceil = ceilings_now()
    header["end"] = {k: v for k, v in end_ceil.items() if k not in ("bandwidth", "rate")}
    save()
    if tuned:
        print("CONFIGS for", device, "=", json.dumps(tuned), flush=True)
    print("\n## bench summary")
    print(
        f"{header['gpu']}, driver {header.get('gpu_driver')}, {header['date']}, torch {torch.__version__}, triton {triton.__version__}: "
        f"read {start_ceil['read_tbps']} TB/s and {start_ceil['bf16_tflops']} TFLOP/s bf16 at the start, "
        f"{end_ceil['read_tbps']} TB/s and {end_ceil['bf16_tflops']} TFLOP/s at the end; reference configs: {header['reference_configs']}; "
        f"vLLM: {header['vllm']}" + (f"; {stopped}" if stopped else "")
    )
    print("floor = max(FLOPs / bf16 rate, bytes / read bandwidth), both measured at the start; % = floor / time")
    print("| model | tokens | bound | floor us | ours us | % | vLLM us | % | vLLM config | grouped_mm us | naive us | ours / vLLM |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in cells:
        print(
            f"| {c['model']} | {c['tokens']} | {c['bound']} | {c['floor_us']} | {c.get('ours_us', 'failed')} | {c.get('ours_pct_floor', '-')} | "
            f"{c.get('vllm_us', '-')} | {c.get('vllm_pct_floor', '-')} | {c.get('vllm_config', '-')} | {c.get('grouped_mm_us', '-')} | "
            f"{c.get('naive_us', '-')} | {c.get('ours_over_vllm', '-')} |"
        )
    print("\n".join(goal_lines(cells, start_ceil["bf16_tflops"])))


if __name__ == "__main__":
    sys.exit(main())
