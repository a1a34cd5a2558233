#!/usr/bin/env bash
# lab-02 on a GPU machine, in one call: re-take the captures, then grade the capture check there.
#
#   benchmarks/lab02_gpu.sh [STEP...]        (default: capture grade)
#
#   capture   benchmarks/lab02_capture.py: three architectures x four experts backends x batch 1
#             and 64 (+ the cold lab05 batch-1 ones) at real per-layer sizes; $OUT/manifest.json
#             and $OUT/captures-N.tar
#   grade     the self-test of lab-02 reduced to its GPU check (capture-on-the-gpu): the solution
#             must pass it, the starter score 0, and the wrong files it must catch fail it
#             (without_cuda_activity, which only a GPU can catch; cold_first_step; canned_trace,
#             which ignores its inputs); $OUT/selftest-gpu.txt
#
# $OUT/summary.md is written first and grows after each step, so a call cut off at its limit still
# says what it did. Steps run under one deadline (DEADLINE_S, default 540 s); the capture step
# stops starting captures at CAPTURE_BUDGET_S (default 230 s), leaving the rest to the grading;
# CAPTURE_ARGS passes more options to lab02_capture.py (e.g. "--models mixtral --batches 1").
# At most eight files come back from $OUT: summary.md, manifest.json, captures-1..4.tar,
# selftest-gpu.txt.
#
# The device image has torch, triton and transformers but not pydantic or nbformat, and no
# bubblewrap: carry .whl/ and .device/ as for lab-05 (docs/lab-05-gpu.md says how to fill them).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NO_COLOR=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STARTED=$(date +%s)
DEADLINE_S=${DEADLINE_S:-540}
CAPTURE_BUDGET_S=${CAPTURE_BUDGET_S:-230}
LAB=exercises/phase-07-gemm-and-moe-kernels/lab-02-profile-fused-moe
SUMMARY=$OUT/summary.md
WORK=$(mktemp -d)

source "$(dirname "$0")/gpu_common.sh"

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(capture grade)
{
  echo "# lab-02 on the GPU, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "steps: ${steps[*]}; git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo '```'
  nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv 2>&1
  python3 -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
  bwrap --version 2>&1
  echo '```'
} >"$SUMMARY"
cat "$SUMMARY"

# The self-test of lab-02 reduced to its GPU check, on a copy of the lab holding only the wrong
# files that check must catch: every other check is proven on the CPU (CI's self-test), and a full
# grading of every file would not fit one call. The manifest is loaded (and validated) whole; only
# the graded checks are filtered, in memory.
cat >"$WORK/gpu_selftest.py" <<'PY'
import shutil, sys
from pathlib import Path
from grader.manifest import load_manifest
from grader.plugins import default
from grader.selftest import run_selftest
from grader.session import GradingOptions
lab, work = Path(sys.argv[1]), Path(sys.argv[2])
dest = work / "ex" / lab.parent.name / lab.name
shutil.copytree(lab, dest, ignore=shutil.ignore_patterns("__pycache__", "wrong"))
(dest / "wrong").mkdir()
graded = "capture-on-the-gpu"
for name in ("capture_without_cuda_activity", "capture_cold_first_step", "capture_canned_trace"):
    text = (lab / "wrong" / f"{name}.patch").read_text()
    # the expectations of checks not graded here are proven on the CPU: only this check's stay
    lines = [ln for ln in text.splitlines(keepends=True) if not ln.startswith("# expect:") or ln.split()[2] == graded]
    (dest / "wrong" / f"{name}.patch").write_text("".join(lines))
plugins = default()
manifest = load_manifest(dest, plugins.checkers())
gpu_only = manifest.model_copy(update={"checks": {graded: manifest.checks[graded]}})
print(f"lab-02 reduced to capture-on-the-gpu; wrong files: {', '.join(sorted(p.name for p in (dest / 'wrong').iterdir()))}")
sys.exit(0 if run_selftest(gpu_only, GradingOptions(), plugins, sys.stdout, work / "selftest") else 1)
PY

status=0
for step in "${steps[@]}"; do
  note "" "## $step (started at +$(( $(date +%s) - STARTED )) s)"
  rc=0
  case "$step" in
    capture)
      # shellcheck disable=SC2086  # CAPTURE_ARGS: more options of lab02_capture.py, word-split on purpose
      timed "$OUT/capture.log" python3 benchmarks/lab02_capture.py "$OUT" --budget-s "$CAPTURE_BUDGET_S" --max-files 4 ${CAPTURE_ARGS:-}
      rc=$?
      note "$(sed -n '/^NVIDIA\|^| capture\|^| ---\|^| [a-z]\|captured, /p' "$OUT/capture.log")"
      rm -f "$OUT/capture.log"
      ;;
    grade)
      timed "$OUT/selftest-gpu.txt" python3 "$WORK/gpu_selftest.py" "$LAB" "$WORK"
      rc=$?
      python3 - "$WORK/selftest/lab-02-profile-fused-moe" >>"$OUT/selftest-gpu.txt" <<'PY'
import json, pathlib, sys
print("\n| file | score | check | status | s | message |\n| --- | --- | --- | --- | --- | --- |")
for result in sorted(pathlib.Path(sys.argv[1]).glob("*/result.json")):
    r = json.loads(result.read_text())
    for c in r["checks"]:
        msg = " ".join(c["message"].split())[:300].replace("|", "/")
        print(f"| {result.parent.name} | {r['score']:g}/{r['max_score']:g} | {c['id']} | {c['status']} | {c['duration_s']:.0f} | {msg} |")
PY
      note "exit $rc" '```' "$(grep -E '^  (ok|FAIL)' "$OUT/selftest-gpu.txt")" '```'
      ;;
    *) echo "unknown step $step (capture, grade)"; status=2; break ;;
  esac
  [ "$rc" -eq 0 ] || status=1
done
note "" "done at +$(( $(date +%s) - STARTED )) s"
rm -rf "$WORK"
exit $status
