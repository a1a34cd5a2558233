"""Wall time of `grader submit` on lab-01, start-up included, per isolation tier.

Runs the real command (`python -m grader submit ...`) as a student would, several times per
tier and file, alternating tiers so that drift on the machine hits both alike, and prints a
markdown table of medians with the spread. The difference between the tiers is what full
isolation costs.

    python benchmarks/submit_wall.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-01-moe-routing"
FILES = {"solution": LAB / "solution.py", "starter": LAB / "starter.py"}
TIERS = ("bubblewrap", "process")


def run(path: Path, tier: str, out: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "grader", "submit", str(path), "--sandbox", tier, "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"grader failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = {(f, t): [] for f in FILES for t in TIERS}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in FILES.items():  # warm the page cache once per file
            run(path, TIERS[0], Path(tmp) / "warm")
        for i in range(args.repeats):
            for name, path in FILES.items():
                for tier in TIERS if i % 2 == 0 else reversed(TIERS):
                    times[(name, tier)].append(run(path, tier, Path(tmp) / f"{name}-{tier}"))
    print(f"`grader submit` on lab-01, wall time per run, start-up included ({args.repeats} runs each)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| file | tier | median s | min s | max s |")
    print("| --- | --- | --- | --- | --- |")
    for (name, tier), values in times.items():
        print(f"| {name} | {tier} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    for name in FILES:
        extra = statistics.median(times[(name, "bubblewrap")]) - statistics.median(times[(name, "process")])
        print(f"\nfull isolation costs {extra:+.3f} s on the {name} (median bubblewrap minus median process)")


if __name__ == "__main__":
    main()
