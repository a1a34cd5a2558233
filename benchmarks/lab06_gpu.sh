#!/usr/bin/env bash
# lab-06's GPU proofs in one call (at most ~8 minutes): what the CPU interpreter cannot show.
#
#   benchmarks/lab06_gpu.sh calibrate ptx bench     # one call (about 4 minutes on an H100, estimated)
#   benchmarks/lab06_gpu.sh selftest                # a second call (about 60 s per graded file)
#
#   calibrate  the accumulation-precision case: the reference against wrong/fp8_fast_accum, and
#              oracle (i) on the graded GPU shapes for the reference and accepted/reciprocal_quant
#   ptx        the matrix instructions of the reference's compiled kernels at decode and prefill
#   bench      the reference against lab-05's bf16 reference, DeepSeek-V3, T = 1, 8, 128, 512
#   selftest   grader selftest lab-06 with the GPU checks on, over the solution, the starter and
#              the six wrong files that only a GPU can catch (the CPU's are proven on the CPU)
#
# Writes under $OUT (at most 8 files): summary.md, lab06_calibration.json, lab06_ptx.json,
# lab06_bench.json, steps.log, selftest.txt, solution-result.json; prints summary.md last.
# One deadline for all steps (DEADLINE_S, default 480 s); a step that would pass it is cut.
# Like benchmarks/gpu_session.sh it carries the wheels the device image lacks in .whl/ and
# Debian's bubblewrap in .device/ (docs/lab-05-gpu.md says how to fetch them).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NO_COLOR=1
DEADLINE_S=${DEADLINE_S:-480}
T0=$(date +%s)
LOG=$OUT/steps.log
SUMMARY=$OUT/summary.md
SCRATCH=$(mktemp -d)
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(calibrate ptx bench)

SUMMARY=${SUMMARY:-/dev/null} STARTED=${STARTED:-$(date +%s)} source "$(dirname "$0")/gpu_common.sh"

say() { printf '%s\n' "$@" >>"$SUMMARY"; }
remaining() { echo $((DEADLINE_S - $(date +%s) + T0)); }
# run "$@" under what is left of the deadline, its output into the log; the status of "$@"
within_deadline() {
  local left; left=$(remaining)
  if [ "$left" -lt 30 ]; then say "- skipped, under 30 s left: $*"; return 124; fi
  timeout --kill-after=10 "$left" "$@" >>"$LOG" 2>&1
  local rc=$?
  [ "$rc" -eq 124 ] && say "- cut at the deadline ($DEADLINE_S s): $*"
  return "$rc"
}

{
  echo "# lab-06 on the GPU, $(date -u +%Y-%m-%dT%H:%MZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader 2>&1
  python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)' 2>&1
  echo '```'
} >"$SUMMARY"

# The selftest's lab: a copy whose wrong/ holds only what a GPU is needed to catch.
gpu_lab() {
  local lab=exercises/phase-07-gemm-and-moe-kernels/lab-06-fp8-block-scaled-moe
  local dest=$SCRATCH/exercises/phase-07-gemm-and-moe-kernels/lab-06-fp8-block-scaled-moe
  mkdir -p "$dest/wrong"
  cp "$lab"/{manifest.toml,lab.py,solution.py,starter.py,README.md,test_lab.py} "$dest"/
  for f in fp8_fast_accum fp16_dressup int32_offsets slow_kernel empty_experts_get_blocks decorative_kernel; do
    cp "$lab/wrong/$f.patch" "$dest/wrong/"
  done
}

for step in "${STEPS[@]}"; do
  say "" "## $step (at +$(( $(date +%s) - T0 )) s)"
  echo "== $step" >>"$LOG"
  case "$step" in
    calibrate|ptx|bench)
      within_deadline python3 benchmarks/lab06_gpu.py "$step" --out "$OUT"
      rc=$?
      say "exit $rc" '```' "$(sed -n "/^== $step\$/,\$p" "$LOG" | grep -vE '^(== |  warnings|/)' | tail -n 14)" '```'
      ;;
    selftest)
      gpu_lab
      GRADER_EXERCISES=$SCRATCH/exercises within_deadline python3 -m grader selftest lab-06 --out "$SCRATCH/reports"
      rc=$?
      sed -n '/^== selftest$/,$p' "$LOG" | grep -E '^(selftest|  (ok|FAIL))' >"$OUT/selftest.txt"
      cp "$SCRATCH/reports/lab-06-fp8-block-scaled-moe/solution/result.json" "$OUT/solution-result.json" 2>/dev/null
      say "exit $rc (the copy holds only the GPU wrong files: its 'no wrong file fails' line lists the CPU checks)" \
        '```' "$(grep -E '^  (FAIL|ok    (solution|starter|wrong/))' "$OUT/selftest.txt" | cut -c1-150)" '```'
      ;;
    *) say "unknown step $step"; rc=2 ;;
  esac
done
say "" "done at +$(( $(date +%s) - T0 )) s"
cat "$SUMMARY"
