"""lab-05 on the GPU, in one call: check, (optionally) tune, and time the reference fused MoE.

For Mixtral-like (E=8, k=2, H=4096, I=14336) and DeepSeek-V3-like (E=256, k=8, H=7168, I=2048)
experts at 1, 8, 64, 512 and 4096 tokens, bf16, on whatever GPU it runs on:

* measures that GPU's copy bandwidth and bf16 matrix rate (grader/hardware.py, the same
  calibration the grader runs) and reads its datasheet ceilings;
* checks the reference solution, a naive per-expert torch loop and torch._grouped_mm against a
  float32 oracle (relative Frobenius error);
* with --tune, sweeps tile configurations per cell (GEMM 1, then GEMM 2) and writes the CONFIGS
  table of this GPU to OUT/moe_configs.json (--apply FILE, on any machine, puts it in solution.py);
* times every method as the median of triton.testing.do_bench (L2 flushed before each run),
  as CUDA-graph replays where the method allows, and prints us, TFLOP/s, GB/s and % of the
  roofline per cell.

Roofline per cell: max(FLOPs / bf16 rate, bytes / bandwidth) with the rates measured at the start
of the run; bytes = the weights of the experts the routing actually touches + x read + out
written. The datasheet roofline is printed beside it (the grader's floor is 90% of that).

    python benchmarks/moe_gpu.py [--tune] [--models mixtral,deepseek_v3] [--tokens 1,8,64,512,4096] [--out DIR]
    python benchmarks/moe_gpu.py --apply OUT/moe_configs.json   # no GPU needed
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
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
MODELS = {"mixtral": (8, 2, 4096, 14336), "deepseek_v3": (256, 8, 7168, 2048)}


def load_solution():
    spec = importlib.util.spec_from_file_location("lab05_solution", SOLUTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_inputs(E, k, H, I, T, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(T, H, device="cuda", dtype=torch.bfloat16, generator=g)
    logits = torch.randn(T, E, device="cuda", generator=g)
    weights, ids = torch.topk(torch.softmax(logits, -1), k)
    weights = (weights / weights.sum(-1, keepdim=True)).float()
    return x, weights, ids.to(torch.int32)


def make_weights(E, H, I, seed=1):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w1 = torch.randn(E, 2 * I, H, device="cuda", dtype=torch.bfloat16, generator=g) * H**-0.5
    w2 = torch.randn(E, H, I, device="cuda", dtype=torch.bfloat16, generator=g) * I**-0.5
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


# Curated candidates. GEMM 1: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages, INTERLEAVE, PERSISTENT);
# GEMM 2: (BLOCK_N, BLOCK_K, warps, stages, SPLIT_K, PERSISTENT). BLOCK_M and GROUP_M are set per regime.
DECODE_1 = [
    (16, 32, 256, 4, 4, 0, 0), (16, 64, 128, 4, 4, 0, 0), (16, 64, 256, 4, 4, 0, 0), (16, 32, 128, 4, 5, 0, 0),
    (16, 32, 256, 4, 4, 1, 0), (16, 64, 128, 4, 4, 1, 0), (16, 32, 128, 4, 5, 1, 0), (32, 64, 128, 4, 4, 0, 0),
    (32, 32, 256, 4, 4, 1, 0), (16, 128, 128, 8, 4, 0, 0),
]
DECODE_2 = [
    (64, 128, 4, 4, 1, 0), (64, 128, 4, 4, 2, 0), (64, 128, 4, 4, 4, 0), (128, 128, 8, 4, 4, 0), (64, 256, 4, 4, 2, 0),
    (32, 128, 4, 4, 4, 0), (32, 256, 4, 4, 2, 0), (128, 128, 4, 4, 2, 0), (64, 128, 4, 5, 2, 0),
]
PREFILL_1 = [
    (128, 64, 64, 8, 4, 1, 0), (128, 128, 64, 8, 3, 1, 0), (128, 128, 64, 8, 4, 1, 0), (64, 128, 64, 4, 4, 1, 0),
    (128, 64, 64, 8, 4, 1, 1), (128, 128, 64, 8, 3, 1, 1), (128, 128, 64, 8, 4, 0, 0), (64, 256, 64, 8, 3, 0, 0),
    (128, 64, 128, 8, 3, 1, 0), (64, 64, 128, 4, 4, 1, 0), (128, 128, 64, 8, 4, 0, 1), (256, 64, 64, 8, 3, 1, 0),
]
PREFILL_2 = [
    (128, 64, 8, 3, 1, 0), (256, 64, 8, 3, 1, 0), (256, 64, 8, 4, 1, 0), (128, 64, 4, 4, 1, 0), (128, 128, 8, 3, 1, 0),
    (256, 64, 8, 3, 1, 1), (128, 64, 8, 4, 1, 1), (64, 128, 4, 4, 1, 0), (128, 64, 8, 4, 2, 0), (256, 64, 8, 3, 2, 0),
]


def gemm1_candidates(T, E, k):
    per_expert = T * k / E
    if per_expert <= 48:
        return [(bm, bn, bk, 1, w, s, il, p) for bm, bn, bk, w, s, il, p in DECODE_1]
    out = [(bm, bn, bk, 8, w, s, il, p) for bm, bn, bk, w, s, il, p in PREFILL_1]
    return out + [(bm, bn, bk, g, w, s, il, p) for bm, bn, bk, w, s, il, p in PREFILL_1[:3] for g in (16, 32)]


def gemm2_candidates(bm, T):
    if bm <= 32:
        return [(bm, bn, bk, 1, w, s, split, p) for bn, bk, w, s, split, p in DECODE_2]
    return [(bm, bn, bk, g, w, s, split, p) for bn, bk, w, s, split, p in PREFILL_2 for g in (8,)]


def tune_cell(S, x, w1, w2, weights, ids, rep_ms, budget_s):
    E, H, I = w1.shape[0], w1.shape[2], w2.shape[2]
    T = x.shape[0]
    start = time.time()
    base1, base2 = S.pick_config(T, E, H, I, S.device_name(x.device))
    results = []
    for c1 in gemm1_candidates(T, E, ids.shape[1]):
        if time.time() - start > budget_s / 2:
            break
        c2 = (c1[0],) + tuple(base2[1:])
        try:
            t, _, _ = bench(lambda: S.fused_moe(x, w1, w2, weights, ids, config=(c1, c2)), True, rep_ms)
        except Exception as exc:
            print(f"    gemm1 {c1}: {type(exc).__name__}", flush=True)
            continue
        results.append((t, c1))
    results.sort()
    best1 = results[0][1] if results else base1
    results2 = []
    for c2 in gemm2_candidates(best1[0], T):
        if time.time() - start > budget_s:
            break
        try:
            t, _, _ = bench(lambda: S.fused_moe(x, w1, w2, weights, ids, config=(best1, c2)), True, rep_ms)
        except Exception as exc:
            print(f"    gemm2 {c2}: {type(exc).__name__}", flush=True)
            continue
        results2.append((t, c2))
    results2.sort()
    best2 = results2[0][1] if results2 else (best1[0],) + tuple(base2[1:])
    out = S.fused_moe(x, w1, w2, weights, ids, config=(best1, best2))
    return best1, best2, rel_err(out, oracle(x, w1, w2, weights, ids)), len(results) + len(results2)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--apply", type=Path, help="put the table a --tune run wrote into solution.py, and stop")
    parser.add_argument("--models", default="mixtral,deepseek_v3")
    parser.add_argument("--tokens", default="1,8,64,512,4096")
    parser.add_argument("--rep-ms", type=int, default=200)
    parser.add_argument("--tune-budget-s", type=float, default=40)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    if args.apply:
        apply(args.apply)
        return
    S = load_solution()
    device = torch.cuda.get_device_name(0)
    measured = hardware.measured_ceilings(("bfloat16",))
    try:
        sheet = hardware.datasheet_ceilings(device, lambda: measured)
    except InfrastructureError as exc:
        print(f"(no datasheet roofline: {exc})", flush=True)
        sheet = None
    header = {
        "date": datetime.date.today().isoformat(),
        **hardware.gpu_facts(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "measured_bandwidth_tbps": round(measured.bandwidth / 1e12, 3),
        "measured_bf16_tflops": round(measured.rates["bfloat16"] / 1e12, 1),
        "datasheet": sheet.source if sheet else None,
        "reference_configs": S.TUNED_ON.get(device, "no table for this GPU: GENERIC"),
    }
    print(json.dumps(header), flush=True)
    rows, tuned = [], {}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    peak_flops, peak_bytes = measured.rates["bfloat16"], measured.bandwidth
    for model in args.models.split(","):
        E, k, H, I = MODELS[model]
        w1, w2 = make_weights(E, H, I)
        for T in [int(t) for t in args.tokens.split(",")]:
            x, weights, ids = make_inputs(E, k, H, I, T, seed=T)
            flops, nbytes, touched = work(E, k, H, I, T, ids)
            roofline = measured.roofline_us(flops, nbytes, "bfloat16")
            sheet_us = sheet.roofline_us(flops, nbytes, "bfloat16") if sheet else None
            ref = oracle(x, w1, w2, weights, ids)
            if args.tune:
                c1, c2, err, n = tune_cell(S, x, w1, w2, weights, ids, max(args.rep_ms // 8, 10), args.tune_budget_s)
                tuned.setdefault(f"{E},{H},{I}", []).append([T, list(c1), list(c2)])
                print(f"  tuned {model} T={T}: {c1} {c2} err {err:.1e} ({n} configs)", flush=True)
                (out_dir / "moe_configs.json").write_text(json.dumps({
                    "device": device,
                    "tuned_on": f"{header['date']}, one {device}, torch {torch.__version__}, triton {triton.__version__}",
                    "configs": tuned,
                }, indent=1))  # fmt: skip
                config = (c1, c2)
            else:
                config = None
            methods = {"reference": (lambda: S.fused_moe(x, w1, w2, weights, ids, config=config), True)}
            if not args.skip_peers:
                methods["naive"] = (lambda: naive(x, w1, w2, weights, ids), False)
                methods["grouped_mm"] = (lambda: grouped_mm(x, w1, w2, weights, ids), True)
            for name, (fn, graph) in methods.items():
                try:
                    err = rel_err(fn(), ref)
                    us, iqr, used_graph = bench(fn, graph, args.rep_ms)
                except Exception as exc:
                    print(f"  {model} T={T} {name}: FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                    continue
                row = {
                    "model": model, "tokens": T, "method": name, "us": round(us, 1), "iqr_us": round(iqr, 1),
                    "graph": used_graph, "rel_err": err, "roofline_us": round(roofline, 1),
                    "datasheet_us": round(sheet_us, 1) if sheet_us else None, "touched": touched,
                    "tflops": round(flops / us / 1e6, 1), "gbps": round(nbytes / us / 1e3, 1),
                    "pct_roofline": round(100 * roofline / us, 1),
                    "bound": "compute" if flops / peak_flops > nbytes / peak_bytes else "memory",
                }
                rows.append(row)
                print(
                    f"  {model:12s} T={T:5d} {name:11s} {us:9.1f} us (iqr {iqr:6.1f}) {row['tflops']:6.1f} TFLOP/s "
                    f"{row['gbps']:7.1f} GB/s {row['pct_roofline']:5.1f}% of roofline  err {err:.1e}",
                    flush=True,
                )
            (out_dir / "moe_gpu.json").write_text(json.dumps({"header": header, "rows": rows, "tuned": tuned}, indent=1))
        w1 = w2 = None  # free the weights before the next model
        torch.cuda.empty_cache()
    end = hardware.measured_ceilings(("bfloat16",), again=True)
    header["measured_end_bandwidth_tbps"] = round(end.bandwidth / 1e12, 3)
    header["measured_end_bf16_tflops"] = round(end.rates["bfloat16"] / 1e12, 1)
    (out_dir / "moe_gpu.json").write_text(json.dumps({"header": header, "rows": rows, "tuned": tuned}, indent=1))
    if tuned:
        print("CONFIGS for", device, "=", json.dumps(tuned), flush=True)
    print(
        f"\n{header['gpu']}, driver {header.get('gpu_driver')}, {header['date']}: measured {header['measured_bandwidth_tbps']} TB/s "
        f"and {header['measured_bf16_tflops']} TFLOP/s bf16 at the start, {header['measured_end_bandwidth_tbps']} TB/s and "
        f"{header['measured_end_bf16_tflops']} TFLOP/s at the end; reference configs: {header['reference_configs']}"
    )
    print("| model | tokens | roofline us | datasheet us | bound | method | us | TFLOP/s | GB/s | % of roofline | rel err |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['tokens']} | {r['roofline_us']} | {r['datasheet_us']} | {r['bound']} | {r['method']} | "
            f"{r['us']} | {r['tflops']} | {r['gbps']} | {r['pct_roofline']} | {r['rel_err']:.1e} |"
        )


if __name__ == "__main__":
    sys.exit(main())
