"""Throughput of `grader batch` on lab-01, and what a SIGKILL part-way through costs.

Builds N lab-01 submissions in a temporary folder (correct ones from the solution and
`accepted/`, wrong ones from `wrong/`, hostile ones from the sandbox corpus minus the files
that sit out a time limit), then:

1. grades them all with `grader batch --jobs J` under full isolation, timing the whole command
   (start-up included): submissions per second;
2. grades them again into a fresh folder, kills the batch with SIGKILL part-way, re-runs it, and
   checks that every student's result equals the uninterrupted run's, apart from timings;
3. prints where the time went (per-check grading time inside the workers) and how stable the
   timed check (`grouped-is-faster`) was with J jobs sharing the cores.

    python benchmarks/batch_throughput.py [--count 200] [--jobs 2] [--kill-at 0.4]

Run it as root with bubblewrap installed (the batch refuses degraded isolation).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from grader.selftest import known_files, materialize

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-01-moe-routing"
CORPUS = ROOT / "tests" / "sandbox" / "corpus"
# Corpus files that wait out a time limit (seconds each, by design): a throughput run leaves them out.
SLOW_BY_DESIGN = {"infinite_loop_at_import.py", "sleep_forever_in_call.py", "ignores_sigterm.py", "reads_the_solution.py"}
TIMING_CHECK = "grouped-is-faster"


def hostile_files() -> list[Path]:
    out = []
    for path in sorted(CORPUS.glob("*.py")):
        text = path.read_text()
        if path.name in SLOW_BY_DESIGN or re.search(r"# verdict: .*(within|longer than|already ran past)", text):
            continue
        out.append(path)
    return out


def build_class(folder: Path, count: int) -> dict[str, str]:
    """``count`` submissions, 40% correct, 35% wrong, 25% hostile; returns student -> kind."""
    pools = {
        "correct": [LAB / "solution.py", *sorted((LAB / "accepted").glob("*.py"))],
        "wrong": known_files(LAB, "wrong"),  # patches against the solution, applied below
        "hostile": hostile_files(),
    }
    shares = {"correct": 0.40, "wrong": 0.35, "hostile": 0.25}
    kinds: dict[str, str] = {}
    n = 0
    for kind, share in shares.items():
        pool = pools[kind]
        wanted = round(count * share) if kind != "hostile" else count - n
        for i in range(wanted):
            source = pool[i % len(pool)]
            student = f"s{n:03d}_{source.stem}"
            # A per-student comment: distinct content, as in a real class.
            text = materialize(source, LAB).data.decode("utf-8")
            (folder / f"{student}.py").write_text(text + f"\n# student {n}\n")
            kinds[student] = kind
            n += 1
    return kinds


def batch_cmd(folder: Path, out: Path, jobs: int) -> list[str]:
    return [sys.executable, "-m", "grader", "batch", str(folder), "-e", "lab-01", "--out", str(out), "--jobs", str(jobs)]


def run_batch(folder: Path, out: Path, jobs: int, env: dict[str, str]) -> tuple[float, str, int]:
    started = time.perf_counter()
    done = subprocess.run(batch_cmd(folder, out, jobs), capture_output=True, text=True, env=env, cwd=ROOT)
    return time.perf_counter() - started, done.stderr + done.stdout, done.returncode


def load(out: Path, students: list[str]) -> dict[str, dict]:
    return {s: json.loads((out / s / "result.json").read_text()) for s in students}


def _uid_free(text: str) -> str:
    # Which slot (and so which sandbox uid) grades a student depends on scheduling; a submission
    # that prints its own uid (escape_attempts.py does) is otherwise graded identically.
    return re.sub(r"\buid \d+", "uid N", text)


def comparable(result: dict) -> dict:
    """A result without what timing changes: durations, start time, the timed check's numbers."""
    r = {k: v for k, v in result.items() if k not in ("duration_s", "started_at")}
    r["submission_output"] = _uid_free(r.get("submission_output", ""))
    checks = []
    for c in r["checks"]:
        c = {k: v for k, v in c.items() if k != "duration_s"}
        c["message"] = _uid_free(c["message"])
        if c["kind"] == "cpu-speedup":
            c = {"id": c["id"], "timed": True}
        checks.append(c)
    r["checks"] = checks
    r["score"] = None  # the timed check's points may move the total; compared per check instead
    return r


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.4, help="fraction graded before the SIGKILL")
    parser.add_argument(
        "--submit-sample", type=int, default=40, help="also grade this many with one `grader submit` process each (0: skip)"
    )
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    env = dict(os.environ, GRADER_SECRET_SEED=os.environ.get("GRADER_SECRET_SEED", "benchmark-secret"), NO_COLOR="1")
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        folder = Path(tmp) / "class"
        folder.mkdir()
        kinds = build_class(folder, args.count)
        students = sorted(kinds)
        print(f"{len(students)} submissions: {dict(Counter(kinds.values()))}", flush=True)

        # 1. throughput
        wall, log, code = run_batch(folder, Path(tmp) / "run1", args.jobs, env)
        if code not in (0, 3):
            raise SystemExit(f"batch failed ({code}):\n{log}")
        first = load(Path(tmp) / "run1", students)
        rate = len(students) / wall
        print(f"run 1: {wall:.1f} s for {len(students)} ({rate:.2f}/s, start-up included); exit {code}", flush=True)

        # 2. kill part-way, re-run, compare
        out2 = Path(tmp) / "run2"
        proc = subprocess.Popen(batch_cmd(folder, out2, args.jobs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        target = int(len(students) * args.kill_at)
        while proc.poll() is None and len(list((out2 / ".state").glob("s*.json"))) < target:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recorded = len(list((out2 / ".state").glob("s*.json")))
        wall2, log2, code2 = run_batch(folder, out2, args.jobs, env)
        skipped = int(m.group(1)) if (m := re.search(r"(\d+) already graded", log2)) else 0
        second = load(out2, students)
        lost = [s for s in students if s not in second]
        differ = [s for s in students if comparable(first[s]) != comparable(second[s])]
        timed_flips = [
            s for s in students
            if next(c["status"] for c in first[s]["checks"] if c["id"] == TIMING_CHECK)
            != next(c["status"] for c in second[s]["checks"] if c["id"] == TIMING_CHECK)
        ]  # fmt: skip
        print(
            f"run 2: killed with {recorded} recorded; the re-run skipped {skipped} and graded the rest in {wall2:.1f} s "
            f"(exit {code2}); lost {len(lost)}; results differing apart from timings: {len(differ)}; "
            f"{TIMING_CHECK} verdict flips between runs: {len(timed_flips)}",
            flush=True,
        )

        # 2b. the design this replaces: one `python -m grader submit` process per submission, J at a time
        submit_rate = None
        if args.submit_sample:
            sample = students[:: max(1, len(students) // args.submit_sample)][: args.submit_sample]

            def submit(student: str) -> None:
                cmd = [sys.executable, "-m", "grader", "submit", str(folder / f"{student}.py"), "-e", "lab-01",
                       "--official", "-q", "--out", str(Path(tmp) / "submit" / student)]  # fmt: skip
                subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT)

            from concurrent.futures import ThreadPoolExecutor

            started = time.perf_counter()
            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(submit, sample))
            submit_rate = len(sample) / (time.perf_counter() - started)
            print(f"one `grader submit` per submission, {args.jobs} at a time: {submit_rate:.2f}/s on {len(sample)}", flush=True)

        # 3. where the time goes
        per_check: dict[str, list[float]] = defaultdict(list)
        grading = []
        for r in first.values():
            grading.append(r["duration_s"])
            for c in r["checks"]:
                per_check[c["id"]].append(c["duration_s"])
        speedups = [
            c["details"].get("speedup") for s, r in first.items() if kinds[s] == "correct"
            for c in r["checks"] if c["id"] == TIMING_CHECK and c["details"].get("speedup") is not None
        ]  # fmt: skip
        timed_status = Counter(
            next(c["status"] for c in r["checks"] if c["id"] == TIMING_CHECK) for s, r in first.items() if kinds[s] == "correct"
        )
        busy = sum(grading)
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
        print(f"date: {dt.date.today().isoformat()}, jobs: {args.jobs}, sandbox: {first[students[0]]['sandbox']['mode']}, "
              f"load average before: {load_before}")
        print()
        print("| measure | value |")
        print("| --- | --- |")
        print(f"| submissions | {len(students)} ({dict(Counter(kinds.values()))}) |")
        print(f"| wall time, whole command | {wall:.1f} s |")
        print(f"| **throughput** | **{rate:.2f} submissions/s** |")
        if submit_rate:
            print(f"| the same with one `grader submit` process per submission | {submit_rate:.2f} submissions/s |")
        print(f"| grading time inside workers (sum) | {busy:.1f} s, {busy / len(students) * 1e3:.0f} ms per submission |")
        print(f"| workers busy / (wall x jobs) | {busy / (wall * args.jobs):.0%} |")
        print(f"| SIGKILL after | {recorded} recorded of {len(students)} |")
        print(f"| skipped on resume | {skipped} |")
        print(f"| re-run wall time | {wall2:.1f} s |")
        print(f"| students lost / results differing (timings aside) | {len(lost)} / {len(differ)} |")
        print(f"| `{TIMING_CHECK}` flips between the two runs | {len(timed_flips)} of {len(students)} |")
        if speedups:
            print(
                f"| `{TIMING_CHECK}` on correct submissions | {dict(timed_status)}; speedup min {min(speedups):.1f}x, "
                f"median {statistics.median(speedups):.1f}x, max {max(speedups):.1f}x (4x needed) |"
            )
        print()
        print("| check | mean ms | max ms |")
        print("| --- | ---: | ---: |")
        for cid, values in per_check.items():
            print(f"| `{cid}` | {statistics.fmean(values) * 1e3:.0f} | {max(values) * 1e3:.0f} |")
        slowest = sorted(first.items(), key=lambda kv: -kv[1]["duration_s"])[:5]
        print()
        print("slowest: " + ", ".join(f"{s} {r['duration_s']:.2f} s" for s, r in slowest))
        for s in differ:
            a, b = comparable(first[s]), comparable(second[s])
            fields = [k for k in a if k != "checks" and a[k] != b.get(k)]
            for ca, cb in zip(a["checks"], b["checks"]):
                if ca != cb:
                    keys = [k for k in ca if ca[k] != cb.get(k)]
                    fields.append(f"{ca['id']}.{'/'.join(keys)}: {str(ca.get(keys[0]))[:160]!r} vs {str(cb.get(keys[0]))[:160]!r}")
            print(f"differs: {s}: " + "; ".join(fields))


if __name__ == "__main__":
    main()
