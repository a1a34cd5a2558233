#!/usr/bin/env bash
# Everything lab-05 needs on a GPU machine, in one call: set up, then the steps named, in order.
#
#   benchmarks/gpu_session.sh STEP...        (no step: selftest speed bench)
#
#   selftest        grader selftest lab-05 with the GPU checks on (every wrong file); reports kept
#   selftest-split  the same in two halves, each half with enough wrong files to fail every check,
#                   on GPUs 0 and 1 at once when there are two (the nvidia-h200-x2 kind), else in turn
#   speed           benchmarks/grading_speed.py: grader batch of 8 files and grader submit, the old
#                   path (GRADER_GPU_CACHE=0) and the new side by side
#   submit          grader submit of the solution, as a student runs it on the GPU machine
#   batch           grader batch over the solution, wrong/slow_kernel.patch applied, and the starter
#   bench           benchmarks/moe_gpu.py: the reference against vLLM's Triton fused_moe (best of a
#                   config sweep; carried in .device/vllm/), torch._grouped_mm and a naive loop,
#                   ceilings measured in the same run
#   tune            benchmarks/moe_gpu.py --tune --skip-peers: the reference's table for this GPU,
#                   in $OUT/moe_configs.json (apply it here with moe_gpu.py --apply)
#
# $OUT/summary.md is written first and grows after every step (the device, then each step's
# headline numbers), so a call cut off at its time limit still leaves what it measured; its
# compact form is printed last. Steps run under one deadline (DEADLINE_S, default 570 s: the
# device tool stops a command at 600 s); a step that would pass it is stopped and the summary
# says so, and the next steps still run while time is left. At most eight files come back from
# $OUT: summary.md, selftest.txt, solution-result.json, grading_speed.json, speed.txt, bench.txt,
# moe_gpu.json, moe_configs.json (submit.txt and batch.txt replace two of them when those steps run).
#
# The device image has torch and triton but not pydantic or nbformat, and no bubblewrap: the
# call carries wheels in .whl/ and Debian's bubblewrap .deb in .device/ (docs/lab-05-gpu.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NO_COLOR=1
STARTED=$(date +%s)
DEADLINE_S=${DEADLINE_S:-570}
LAB=exercises/phase-07-gemm-and-moe-kernels/lab-05-fused-moe-kernel
SUMMARY=$OUT/summary.md
WORK=$(mktemp -d)
STEPS_DONE=()

source "$(dirname "$0")/gpu_common.sh"

{
  echo "# lab-05 on the GPU, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "steps: $*; git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo '```'
  nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,memory.total --format=csv 2>&1
  python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)' 2>&1
  bwrap --version 2>&1
  echo '```'
} >"$SUMMARY"
cat "$SUMMARY"

# Split the wrong files in two halves; each half also gets a file for every check it would
# otherwise leave without one, so each half's selftest proves every check.
split_lab() {
  python3 - "$LAB" "$WORK" <<'PY'
import shutil, sys
from pathlib import Path
from grader.selftest import expectations, known_files
lab, work = Path(sys.argv[1]), Path(sys.argv[2])
files = known_files(lab, "wrong")
catches = {f: {cid for cid, _ in expectations(f.read_text())} for f in files}
for part in (1, 2):
    chosen = files[part - 1 :: 2]
    for f in files:
        if catches[f] - set().union(*(catches[c] for c in chosen)):
            chosen.append(f)
    dest = work / f"ex{part}" / lab.parent.name / lab.name
    shutil.copytree(lab, dest, ignore=shutil.ignore_patterns("__pycache__", "wrong"))
    (dest / "wrong").mkdir()
    for f in chosen:
        shutil.copy(f, dest / "wrong" / f.name)
    print(f"part {part}: {', '.join(sorted(f.name for f in chosen))}")
PY
}

selftest_table() {  # the checks of every graded file, from the reports
  python3 - "$1" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1]) / "lab-05-fused-moe-kernel"
print("\n| file | score | check | status | message |\n| --- | --- | --- | --- | --- |")
for result in sorted(root.glob("*/result.json")):
    r = json.loads(result.read_text())
    for c in r["checks"]:
        msg = " ".join(c["message"].split())[:160].replace("|", "/")
        print(f"| {result.parent.name} | {r['score']:g}/{r['max_score']:g} | {c['id']} | {c['status']} | {msg} |")
PY
}

status=0
[ "$#" -gt 0 ] || set -- selftest speed bench
for step in "$@"; do
  note "" "## $step (started at +$(( $(date +%s) - STARTED )) s)"
  rc=0
  case "$step" in
    selftest)
      t0=$(date +%s)
      timed "$OUT/selftest.txt" python3 -m grader selftest lab-05 --out "$WORK/selftest"
      rc=$?
      note "took $(( $(date +%s) - t0 )) s"
      selftest_table "$WORK/selftest" >>"$OUT/selftest.txt"
      cp "$WORK/selftest/lab-05-fused-moe-kernel/solution/result.json" "$OUT/solution-result.json" 2>/dev/null
      note "exit $rc; $(grep -c '^  ok' "$OUT/selftest.txt") lines ok, $(grep -c '^  FAIL' "$OUT/selftest.txt") FAIL" \
        '```' "$(grep -E '^  (FAIL|ok    solution)' "$OUT/selftest.txt")" '```'
      ;;
    selftest-split)
      split_lab | tee -a "$SUMMARY"
      gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
      pids=()
      for part in 1 2; do
        dev=$(( gpus >= 2 ? part - 1 : 0 ))
        CUDA_VISIBLE_DEVICES=$dev GRADER_EXERCISES=$WORK/ex$part timed "$OUT/selftest-$part.txt" \
          python3 -m grader selftest lab-05 --out "$WORK/selftest-$part" &
        pids+=($!)
        [ "$gpus" -ge 2 ] || wait "$!" || rc=1
      done
      for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
      for part in 1 2; do
        selftest_table "$WORK/selftest-$part" >>"$OUT/selftest-$part.txt"
        note "part $part: $(grep -c '^  ok' "$OUT/selftest-$part.txt") lines ok, $(grep -c '^  FAIL' "$OUT/selftest-$part.txt") FAIL" \
          '```' "$(grep -E '^  (FAIL|ok    solution)' "$OUT/selftest-$part.txt")" '```'
      done
      cp "$WORK/selftest-1/lab-05-fused-moe-kernel/solution/result.json" "$OUT/solution-result.json" 2>/dev/null
      ;;
    submit)
      timed "$OUT/submit.txt" python3 -m grader submit "$LAB/solution.py" --out "$WORK/submit"
      rc=$?
      cat "$WORK/submit/scorecard.md" >>"$OUT/submit.txt" 2>/dev/null
      [ -f "$OUT/solution-result.json" ] || cp "$WORK/submit/result.json" "$OUT/solution-result.json" 2>/dev/null
      note '```' "$(grep -E 'Score:' "$OUT/submit.txt")" '```'
      ;;
    batch)
      mkdir -p "$WORK/class"
      cp "$LAB/solution.py" "$WORK/class/ada.py" && cp "$LAB/starter.py" "$WORK/class/cleo.py"
      python3 -c 'import sys; from pathlib import Path; from grader.selftest import materialize
p = Path(sys.argv[1]); Path(sys.argv[2]).write_bytes(materialize(p / "wrong" / "slow_kernel.patch", p).data)' "$LAB" "$WORK/class/ben.py"
      GRADER_SECRET_SEED=gpu-class timed "$OUT/batch.txt" python3 -m grader batch "$WORK/class" --exercise lab-05 --jobs 1 --out "$WORK/class-out"
      rc=$?
      { echo; cat "$WORK/class-out/gradebook.csv"; echo; cat "$WORK/class-out/summary.md"; } >>"$OUT/batch.txt" 2>/dev/null
      note '```' "$(cat "$WORK/class-out/gradebook.csv" 2>/dev/null)" '```'
      ;;
    speed)
      timed "$OUT/speed.txt" python3 benchmarks/grading_speed.py --files 8 --out "$OUT" --budget-s "$(( $(left) - 20 ))"
      rc=$?
      note "$(sed -n '/^lab-05 grading speed/,$p' "$OUT/speed.txt")"
      ;;
    bench)
      timed "$OUT/bench.txt" python3 benchmarks/moe_gpu.py --out "$OUT" --budget-s "$(( $(left) - 20 ))"
      rc=$?
      note "$(sed -n '/^## bench summary/,$p' "$OUT/bench.txt")"
      ;;
    tune)
      timed "$OUT/bench.txt" python3 benchmarks/moe_gpu.py --tune --skip-peers --out "$OUT" --budget-s "$(( $(left) - 20 ))"
      rc=$?
      note "$(grep -E '^(CONFIGS|\||[A-Z].*measured)' "$OUT/bench.txt")"
      ;;
    *) echo "unknown step $step (selftest, selftest-split, speed, submit, batch, bench, tune)"; status=2; break ;;
  esac
  [ "$rc" -eq 0 ] || status=1
  STEPS_DONE+=("$step: exit $rc at +$(( $(date +%s) - STARTED )) s")
done
note "" "done at +$(( $(date +%s) - STARTED )) s"
# The compact summary, last: the device, each step's end, the self-test's verdict lines, the tables.
{
  echo; echo "==== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo 'no GPU'))"
  printf '%s\n' "${STEPS_DONE[@]}"
  if [ -f "$OUT/selftest.txt" ]; then
    grep -E '^  FAIL|^  ok    solution|every check is failed' "$OUT/selftest.txt" | head -20
    echo "selftest: $(grep -c '^  ok' "$OUT/selftest.txt") ok, $(grep -c '^  FAIL' "$OUT/selftest.txt") FAIL"
  fi
  if [ -f "$OUT/speed.txt" ]; then sed -n '/^| path/,/^$/p' "$OUT/speed.txt"; fi
  if [ -f "$OUT/bench.txt" ]; then sed -n '/^## bench summary/,$p' "$OUT/bench.txt" | head -40; fi
} | tee -a "$SUMMARY"
exit $status
