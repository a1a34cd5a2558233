#!/usr/bin/env bash
# Everything lab-05 needs on the GPU machine, in one call: set up, then grade and/or benchmark.
#
#   benchmarks/gpu_session.sh grade   # grader selftest lab-05 on the GPU + grader submit of the solution
#   benchmarks/gpu_session.sh bench   # benchmarks/moe_gpu.py: reference vs naive loop vs torch._grouped_mm
#   benchmarks/gpu_session.sh batch   # grader batch over the solution, a slow and an unfinished submission
#
# The device image has torch and triton but not pydantic or junit-xml, and no bubblewrap: the
# call carries wheels in .whl/ (pip download ... --python-version 3.12, see docs/lab-05-gpu.md)
# and Debian's bubblewrap .deb in .device/. Results go to $OUT (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NO_COLOR=1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
if ! command -v bwrap >/dev/null && ls .device/bubblewrap_*.deb >/dev/null 2>&1; then
  dpkg -x .device/bubblewrap_*.deb /tmp/bw && export PATH=/tmp/bw/usr/bin:$PATH
fi
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader; python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'; bwrap --version; } | tee "$OUT/device.txt"

for step in "$@"; do
  case "$step" in
    grade)
      python3 -m grader selftest lab-05 --out /tmp/selftest-reports 2>&1 | tee "$OUT/selftest-lab05.txt"
      cp /tmp/selftest-reports/lab-05-fused-moe-kernel/solution/scorecard.md "$OUT/solution-scorecard.md"
      cp /tmp/selftest-reports/lab-05-fused-moe-kernel/solution/result.json "$OUT/solution-result.json"
      python3 - <<'PY' > "$OUT/selftest-checks.md"
import json, pathlib
root = pathlib.Path("/tmp/selftest-reports/lab-05-fused-moe-kernel")
print("| file | score | check | status | message |\n| --- | --- | --- | --- | --- |")
for result in sorted(root.glob("*/result.json")):
    r = json.loads(result.read_text())
    for c in r["checks"]:
        msg = " ".join(c["message"].split())[:160].replace("|", "/")
        print(f"| {result.parent.name} | {r['score']:g}/{r['max_score']:g} | {c['id']} | {c['status']} | {msg} |")
PY
      ;;
    bench)
      python3 benchmarks/moe_gpu.py --out "$OUT" 2>&1 | tee "$OUT/bench.txt"
      ;;
    submit)
      python3 -m grader submit exercises/phase-07-gemm-and-moe-kernels/lab-05-fused-moe-kernel/solution.py --out /tmp/submit-solution 2>&1 | tee "$OUT/submit-solution.txt"
      ;;
    batch)
      lab=exercises/phase-07-gemm-and-moe-kernels/lab-05-fused-moe-kernel
      mkdir -p /tmp/class && cp $lab/solution.py /tmp/class/ada.py && cp $lab/wrong/slow_kernel.py /tmp/class/ben.py && cp $lab/starter.py /tmp/class/cleo.py
      GRADER_SECRET_SEED=gpu-class python3 -m grader batch /tmp/class --exercise lab-05 --jobs 1 --out /tmp/class-out 2>&1 | tee "$OUT/batch.txt"
      cp /tmp/class-out/gradebook.csv "$OUT/batch-gradebook.csv"; cp /tmp/class-out/summary.md "$OUT/batch-summary.md"
      ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
