"""lab-06 on a GPU: what the CPU could not prove, measured in one run.

    python benchmarks/lab06_gpu.py calibrate   # OUT/lab06_calibration.json
    python benchmarks/lab06_gpu.py ptx         # OUT/lab06_ptx.json
    python benchmarks/lab06_gpu.py bench       # OUT/lab06_bench.json

* ``calibrate``: the accumulation-precision case (E=8, k=2, H=7168, I=2048, T=256: positive data,
  one scale per expert) for the reference and wrong/fp8_fast_accum.patch (the whole K in the
  tensor core's accumulator), three seeds each, as relative errors against oracle (i); the bound
  that separates them (the geometric mean of the reference's worst and the wrong file's best,
  when they are more than 4x apart). Also oracle (i)'s errors on the graded GPU shapes for the
  reference and for accepted/reciprocal_quant.patch, against the manifest's dequant-bf16 bound.
* ``ptx``: the matrix instructions of every kernel the reference compiles at decode (T=1),
  T=128, the precision case and T=4096, read through the worker's own ``compiled_code``.
* ``bench``: the reference against lab-05's bf16 reference at DeepSeek-V3's shape, T = 1, 8, 128
  and 512, timed with the grader's harness (warm-up sets of their own, an L2 flush before every
  call, fresh inputs), with the % of the FP8 floor (e4m3 bytes of the touched experts over the
  copy bandwidth measured here) beside the published anchors.

Every number printed names the device it came from. Runs as the repository's own code (no
sandbox): the files it imports are the lab's reference and its known files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from grader import hardware  # noqa: E402
from grader.sandbox.boot import gpu as harness  # noqa: E402
from grader.sandbox.boot import worker  # noqa: E402
from grader.selftest import materialize  # noqa: E402

PHASE = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels"
LAB = PHASE / "lab-06-fp8-block-scaled-moe"
ARGS = ("x", "w1", "w1_scale", "w2", "w2_scale", "topk_weights", "topk_ids")
# Published anchors (docs/lab-06-gpu.md): full fused MoE, DeepSeek-V3 TP1, 128 tokens, on an H100,
# as a share of the HBM floor of the experts they touch.
ANCHORS = {"DeepGEMM": 0.58, "vLLM Triton": 0.30}


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def known(folder: str, name: str):
    """A known file of lab-06 (a patch applied to the current solution), imported."""
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_bytes(materialize(LAB / folder / f"{name}.patch", LAB).data)
    return load(path, f"lab06_{name}")


def materialised(inputs: dict) -> list:
    return [inputs[n].materialize("cuda") for n in ARGS]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def device() -> str:
    return torch.cuda.get_device_name(0)


def calibrate(lab, out: Path) -> dict:
    solution = load(LAB / "solution.py", "lab06_solution")
    fast = known("wrong", "fp8_fast_accum")
    recip = known("accepted", "reciprocal_quant")
    result: dict = {"device": device(), "precision_case": {}, "graded": []}
    for name, module in (("reference", solution), ("fp8_fast_accum", fast)):
        errs = []
        for seed in range(3):
            inputs, _ = lab.gpu_inputs(np.random.default_rng(seed), 2, 256)
            args = materialised(inputs)
            errs.append(rel_err(module.fused_moe_fp8(*args), lab.moe_dequant_reference(*args)))
        result["precision_case"][name] = errs
        print(f"precision case, {name}: relative errors {', '.join(f'{e:.3g}' for e in errs)}", flush=True)
    worst_ref, best_wrong = max(result["precision_case"]["reference"]), min(result["precision_case"]["fp8_fast_accum"])
    if best_wrong > 4 * worst_ref:
        result["suggested_bound"] = float(f"{math.sqrt(worst_ref * best_wrong):.2g}")
    else:
        result["suggested_bound"] = None
    print(f"suggested accumulation bound: {result['suggested_bound']} (None: the two are not 4x apart)", flush=True)
    for model, T in ((1, 37), (1, 8), (0, 1), (0, 128), (0, 512)):
        inputs, dims = lab.gpu_inputs(np.random.default_rng(7), model, T)
        args = materialised(inputs)
        ref = lab.moe_dequant_reference(*args)
        row = {"model": lab.MODELS[model][0], "T": T, "reference": rel_err(solution.fused_moe_fp8(*args), ref)}
        row["reciprocal_quant"] = rel_err(recip.fused_moe_fp8(*args), ref)
        result["graded"].append(row)
        print(f"oracle (i), {row['model']} T={T}: reference {row['reference']:.3g}, reciprocal {row['reciprocal_quant']:.3g}", flush=True)
        del args, ref
        torch.cuda.empty_cache()
    (out / "lab06_calibration.json").write_text(json.dumps(result, indent=1))
    return result


def ptx(lab, out: Path) -> dict:
    solution = load(LAB / "solution.py", "lab06_solution")
    result: dict = {"device": device(), "triton": __import__("triton").__version__, "shapes": []}
    for model, T in ((0, 1), (0, 128), (2, 256), (0, 4096)):
        inputs, _ = lab.gpu_inputs(np.random.default_rng(0), model, T)
        worker.forget_compiled(solution)
        solution.fused_moe_fp8(*materialised(inputs))
        torch.cuda.synchronize()
        rows = worker.compiled_code(solution)
        c1, c2 = solution.pick_config(T * lab.MODELS[model][2] / lab.MODELS[model][1])
        result["shapes"].append({"model": lab.MODELS[model][0], "T": T, "block_m": c1[0], "kernels": rows})
        for r in rows:
            print(f"{lab.MODELS[model][0]} T={T} BLOCK_M={c1[0]}: {r['kernel']}: {', '.join(r['ptx_mma']) or 'no MMA'}"
                  f" | SASS {', '.join(r['sass_mma']) or ('none' if r['sass'] else 'not disassembled')}", flush=True)  # fmt: skip
    (out / "lab06_ptx.json").write_text(json.dumps(result, indent=1))
    return result


def bench(lab, out: Path, tokens: list[int]) -> dict:
    solution = load(LAB / "solution.py", "lab06_solution")
    lab05 = load(PHASE / "lab-05-fused-moe-kernel" / "solution.py", "lab05_solution")
    recipes = __import__("grader.recipes", fromlist=["recipes"])
    measured = hardware.measured_ceilings(("bfloat16", "float8_e4m3fn"))
    result: dict = {"device": device(), "measured": measured.describe("measured"), "rows": []}
    print(f"{device()}: {measured.bandwidth / 1e9:.0f} GB/s copy, {measured.rates['float8_e4m3fn'] / 1e12:.0f} TFLOP/s fp8 "
          f"(torch._scaled_mm), {measured.rates['bfloat16'] / 1e12:.0f} TFLOP/s bf16, measured here", flush=True)  # fmt: skip
    name, E, k, H, I = lab.MODELS[0]
    w1_bf16 = recipes.randn((E, 2 * I, H), "bfloat16", 91, scale=H**-0.5).materialize("cuda")
    w2_bf16 = recipes.randn((E, H, I), "bfloat16", 92, scale=I**-0.5).materialize("cuda")
    print("| T | lab-06 fp8 us | lab-05 bf16 us | fp8 speedup | fp8 % of its floor | bf16 % of its floor |", flush=True)
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for T in tokens:
        base, _ = lab.gpu_inputs(np.random.default_rng(T), 0, T)
        sets = [lab.fresh_activations(np.random.default_rng([T, i]), base) for i in range(13)]
        fp8_sets = [materialised(s) for s in sets]
        bf16_sets = [[a[0], w1_bf16, w2_bf16, a[5], a[6]] for a in fp8_sets]
        fp8_us, _ = harness.time_calls(solution.fused_moe_fp8, fp8_sets, warmup=3, budget_s=30)
        bf16_us, _ = harness.time_calls(lab05.fused_moe, bf16_sets, warmup=3, budget_s=30)
        touched = statistics.mean(int(torch.unique(a[6]).numel()) for a in fp8_sets)
        fp8_bytes = touched * 3.0 * H * I + 4.0 * T * H
        floor_fp8 = fp8_bytes / measured.bandwidth * 1e6
        floor_bf16 = (touched * 3.0 * H * I * 2 + 4.0 * T * H) / measured.bandwidth * 1e6
        t8, t16 = statistics.median(fp8_us), statistics.median(bf16_us)
        row = {"T": T, "experts_touched": touched, "fp8_us": round(t8, 1), "bf16_us": round(t16, 1), "speedup": round(t16 / t8, 2)}
        row.update({"fp8_floor_us": round(floor_fp8, 1), "fp8_pct_of_floor": round(100 * floor_fp8 / t8, 1)})
        row.update({"bf16_pct_of_floor": round(100 * floor_bf16 / t16, 1), "fp8_times_us": [round(t, 1) for t in fp8_us]})
        result["rows"].append(row)
        print(f"| {T} | {t8:.1f} | {t16:.1f} | {t16 / t8:.2f}x | {row['fp8_pct_of_floor']}% | {row['bf16_pct_of_floor']}% |", flush=True)
        del fp8_sets, bf16_sets, sets
        torch.cuda.empty_cache()
    anchors = ", ".join(f"{k} {100 * v:.0f}%" for k, v in ANCHORS.items())
    print(f"published at 128 tokens on an H100 (full fused MoE, share of the HBM floor): {anchors}", flush=True)
    (out / "lab06_bench.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["calibrate", "ptx", "bench"])
    parser.add_argument("--out", type=Path, default=Path("gpu-out"))
    parser.add_argument("--tokens", default="1,8,128,512")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("lab06_gpu.py needs a CUDA GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    lab = load(LAB / "lab.py", "lab06_support")
    started = time.time()
    if args.step == "calibrate":
        calibrate(lab, args.out)
    elif args.step == "ptx":
        ptx(lab, args.out)
    else:
        bench(lab, args.out, [int(t) for t in args.tokens.split(",")])
    print(f"{args.step} done in {time.time() - started:.0f} s on the {device()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
