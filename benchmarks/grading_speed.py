"""How long a GPU grading of lab-05 takes, old path and new side by side, in one run.

The new path (GRADER_GPU_CACHE=1, grader/gpu_cache.py) shares what is not the student's between
gradings: the reference's compiled kernels (read-only in the worker) and the calibration, and
gets the GPU side ready while the CPU checks run. The old path (GRADER_GPU_CACHE=0) compiles
and calibrates in every process, as before (both run today's solution and checks). In this order:

1. ``grader batch`` over a class of --files submissions (the solution twice, wrong files that
   reach the speed check and ones that do not, the starter; each with a comment of its own, so
   no two are the same file), ``--jobs 1`` (timings are never shared with another grading),
   starting from an empty grader cache (new) or an empty Triton cache (old): the first student
   pays the compiles, the rest show the steady state;
2. once both batches ran, ``grader submit`` of the solution in each mode (the grader's caches as
   that mode's batch left them: new, the reference folder; old, Triton's own cache of the
   grader's process; the sandbox's is empty either way).

Prints one markdown table (device named) and writes the raw numbers to --out/grading_speed.json:
wall time of each command (start-up included), per student (wall / students, and the median of
the students after the first), submit's wall time, each check's median duration, and the scores
of both modes (they must agree, up to the speed check's timing noise).

    python benchmarks/grading_speed.py [--files 8] [--modes new,old] [--out DIR] [--budget-s 480]

Without a GPU the GPU checks are pending and the times are the CPU checks' alone (a dry run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-05-fused-moe-kernel"
sys.path.insert(0, str(ROOT))
from grader.selftest import materialize  # noqa: E402

# Who is in the class: what each file reaches decides what a grading costs.
CLASS = [
    ("ada", "solution.py"),  # every check, 20/20
    ("ben", "wrong/slow_kernel.patch"),  # its own kernel configs compile in its sandbox
    ("cleo", "starter.py"),  # nothing implemented: the GPU checks end at once
    ("dev", "wrong/pointer_cache.patch"),  # the speed check's refilled-buffer call fails it
    ("eve", "wrong/weight_applied_twice.patch"),  # wrong answers: speed and profile skipped
    ("finn", "wrong/torch_matmul_gemms.patch"),  # library GEMMs: the profile fails
    ("gus", "solution.py"),  # a second right answer
    ("hana", "wrong/decorative_kernel.patch"),  # kernels for show
    ("ivo", "wrong/fp16_accumulation.patch"),
    ("jo", "wrong/missing_tail_mask.patch"),
]


def build_class(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True)
    students = []
    for i in range(count):
        name, source = CLASS[i % len(CLASS)]
        student = name if i < len(CLASS) else f"{name}{i}"
        text = materialize(LAB / source, LAB).data.decode("utf-8")
        (folder / f"{student}.py").write_text(text + f"\n# student {student}\n")
        students.append(student)
    return students


def device() -> dict:
    facts: dict = {"host": os.uname().nodename}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        facts["gpu"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        facts["gpu"] = None
    import torch
    import triton

    facts.update(torch=torch.__version__, triton=triton.__version__, python=sys.version.split()[0])
    return facts


def timed(cmd: list[str], env: dict[str, str], limit: float) -> tuple[float, int, str]:
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=max(limit, 1))
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, text = 124, f"stopped after {limit:.0f} s\n{(exc.stdout or b'')[-2000:]!r}"
    return time.perf_counter() - started, code, text


def results(out: Path, students: list[str]) -> dict[str, dict]:
    found = {}
    for s in students:
        path = out / s / "result.json"
        if path.exists():
            found[s] = json.loads(path.read_text())
    return found


def mode_env(mode: str, work: Path) -> dict[str, str]:
    env = dict(os.environ, NO_COLOR="1", GRADER_SECRET_SEED=os.environ.get("GRADER_SECRET_SEED", "grading-speed"))
    env["GRADER_GPU_CACHE"] = "1" if mode == "new" else "0"
    env["GRADER_CACHE_DIR"] = str(work / f"{mode}-grader-cache")  # empty at first: the new path starts cold
    env["TRITON_CACHE_DIR"] = str(work / f"{mode}-triton-cache")  # the old path's grader compiles here
    return env


def run_batch(mode: str, students: list[str], folder: Path, work: Path, deadline: float) -> dict:
    out = work / f"{mode}-batch"
    cmd = [sys.executable, "-m", "grader", "batch", str(folder), "--exercise", LAB.name, "--jobs", "1", "--out", str(out)]
    wall, code, log = timed(cmd, mode_env(mode, work), deadline - time.monotonic() - 30)
    graded = results(out, students)
    row: dict = {"mode": mode, "batch_wall_s": round(wall, 1), "batch_exit": code, "students": len(students),
                 "graded": len(graded)}  # fmt: skip
    if code not in (0, 3):
        row["batch_log_tail"] = log[-1500:]
    durations = [graded[s]["duration_s"] for s in students if s in graded]
    if durations:
        row["per_student_s"] = round(wall / max(len(graded), 1), 1)
        row["per_student_after_first_s"] = round(statistics.median(durations[1:] or durations), 1)
        row["first_student_s"] = round(durations[0], 1)
        row["scores"] = {s: graded[s]["score"] for s in students if s in graded}
        per_check: dict[str, list[float]] = {}
        for s in students[1:]:
            for c in graded.get(s, {}).get("checks", []):
                per_check.setdefault(c["id"], []).append(c.get("duration_s") or 0.0)
        row["check_median_s"] = {k: round(statistics.median(v), 2) for k, v in per_check.items()}
    return row


def run_submit(row: dict, work: Path, deadline: float) -> None:
    """``grader submit`` of the solution after the batch, with the caches the batch left."""
    mode = row["mode"]
    left = deadline - time.monotonic() - 10
    if left < 30:
        row["submit"] = "not run: the budget is spent"
        return
    sub_out = work / f"{mode}-submit"
    cmd = [sys.executable, "-m", "grader", "submit", str(LAB / "solution.py"), "--out", str(sub_out)]
    wall, code, log = timed(cmd, mode_env(mode, work), left)
    row["submit_wall_s"] = round(wall, 1)
    row["submit_exit"] = code
    result = sub_out / "result.json"
    if result.exists():
        r = json.loads(result.read_text())
        row["submit_score"] = f"{r['score']:g}/{r['max_score']:g}"
        row["submit_checks_s"] = {c["id"]: c.get("duration_s") for c in r["checks"]}
    else:
        row["submit_log_tail"] = log[-1500:]


def table(facts: dict, rows: list[dict]) -> str:
    lines = [
        f"lab-05 grading speed on {facts.get('gpu') or 'no GPU (the GPU checks are pending: CPU part only)'}, "
        f"{facts['date']}, torch {facts['torch']}, triton {facts['triton']}",
        "",
        "| path | students | batch s | per student s | first student s | later students, median s | submit s | submit score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r.get('graded')}/{r['students']} | {r['batch_wall_s']} | {r.get('per_student_s')} | "
            f"{r.get('first_student_s')} | {r.get('per_student_after_first_s')} | {r.get('submit_wall_s', '-')} | "
            f"{r.get('submit_score', '-')} |"
        )
    checks = sorted({k for r in rows for k in r.get("check_median_s", {})})
    if checks:
        lines += ["", "| check (median over students after the first) | " + " | ".join(r["mode"] + " s" for r in rows) + " |",
                  "| --- |" + " --- |" * len(rows)]  # fmt: skip
        for c in checks:
            lines.append(f"| {c} | " + " | ".join(str(r.get("check_median_s", {}).get(c, "-")) for r in rows) + " |")
    if len(rows) == 2 and rows[0].get("scores") and rows[1].get("scores"):
        a, b = rows[0]["scores"], rows[1]["scores"]
        differ = {s: (a[s], b.get(s)) for s in a if s in b and abs(a[s] - b[s]) > 1e-9}
        lines += ["", f"scores: {'the same in both paths' if not differ else 'differ: ' + json.dumps(differ)}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--modes", default="new,old")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting new steps after this long")
    args = parser.parse_args()
    if args.files < 1:
        raise SystemExit("--files must be at least 1")
    deadline = time.monotonic() + args.budget_s
    facts = {**device(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%MZ")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="grading-speed-") as tmp:
        work = Path(tmp)
        students = build_class(work / "class", args.files)
        # Both batches first (the comparison the budget must not lose), then both submits.
        for mode in args.modes.split(","):
            if time.monotonic() > deadline - 60:
                rows.append({"mode": mode, "students": len(students), "batch_wall_s": "not run: the budget is spent"})
                continue
            rows.append(run_batch(mode, students, work / "class", work, deadline))
            print(json.dumps(rows[-1]), flush=True)
        for row in rows:
            if "batch_exit" in row:
                run_submit(row, work, deadline)
                print(json.dumps({k: row[k] for k in row if k.startswith("submit")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grading_speed.json").write_text(json.dumps({"device": facts, "rows": rows}, indent=1))
    print(table(facts, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
