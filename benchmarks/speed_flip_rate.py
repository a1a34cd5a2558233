"""How often the CPU speed check flips its verdict on a loaded machine: the decision rule before
issue 10 against the one now, measured side by side on the same machine, under the same load.

    python benchmarks/speed_flip_rate.py [--gradings 150] [--load 0,4,8] [--json out.json]

For each load level (that many processes burning CPU, each in a session of its own, as other
graders' workers are), it runs lab-01's speed check (``grouped-is-faster``: 4x over the per-token
loop) ``--gradings`` times on two submissions, through the real sandbox:

* the solution (about 9x on an idle machine): every failure is a false fail;
* a "borderline" grouped forward that does its work four times over (about 3.3x on an idle
  machine: the call's fixed cost does not repeat): every pass is a false pass.

Each grading is measured both ways, one after the other: the old rule (five pairs, baseline
first, the median of the per-pair ratios decides) and the checker as it is now (pairs alternate
which side goes first; a median short of 1.25x the requirement earns another round of five
pairs, up to three, and the median of all pairs decides; under half the requirement fails at
once). Prints a table; ``--json`` keeps the
raw ratios. Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

from grader.checkers.base import CheckContext
from grader.checkers.speedup import CpuSpeedupChecker
from grader.lab import Lab
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.sandbox.client import Submission
from grader.sandbox.tiers import choose
from grader.seeds import Seeds

ROOT = Path(__file__).resolve().parent.parent
LAB01 = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-01-moe-routing"
CHECK = "grouped-is-faster"
BORDERLINE = """
def moe_forward_grouped(x, w_gate, w1s, w2s, k):
    # the right algorithm, done four times over
    for _ in range(3):
        _grouped(x, w_gate, w1s, w2s, k)
    return _grouped(x, w_gate, w1s, w2s, k)
"""


def _burn() -> None:
    os.setsid()
    while True:
        pass


def _borderline_source() -> bytes:
    text = (LAB01 / "solution.py").read_text().replace("def moe_forward_grouped(", "def _grouped(")
    return (text + BORDERLINE).encode()


def _old_rule(ctx: CheckContext, check, checker: CpuSpeedupChecker) -> float:
    """The check before issue 10: five pairs, baseline first, the median of the ratios."""
    warm_up = ctx.lab.cache[(CHECK, ctx.seeds.key, "timing", -1)]
    ctx.call(check.function, warm_up[0], check.time_limit_s)
    ratios = []
    for case in ctx.lab.cache[(CHECK, ctx.seeds.key, "timing", 0)]:
        started = time.perf_counter()
        ctx.lab.call_solution(check.baseline, case.inputs)
        base = time.perf_counter() - started
        got = ctx.call(check.function, case, check.time_limit_s)
        ratios.append(base / got.wall_s)
    return statistics.median(ratios)


def measure(name: str, source: bytes, gradings: int, manifest, launcher) -> dict:
    lab = Lab(manifest)
    check = manifest.checks[CHECK]
    checker = CpuSpeedupChecker()
    sub = Submission(source, f"{name}.py", manifest, launcher)
    ctx = CheckContext(lab, sub, Seeds.from_env())
    old, new, rounds = [], [], []
    try:
        checker.run(CHECK, check, ctx)  # fills the input cache, warms the worker
        for _ in range(gradings):
            old.append(_old_rule(ctx, check, checker))
            verdict = checker.run(CHECK, check, ctx)
            new.append((verdict.status.value, verdict.details["speedup"]))
            rounds.append(verdict.details["rounds"])
    finally:
        sub.close()
    need = check.min_speedup
    return {
        "submission": name,
        "old_pass": sum(r >= need for r in old) / gradings,
        "new_pass": sum(s == "passed" for s, _ in new) / gradings,
        "old_ratios": old,
        "new_ratios": [r for _, r in new],
        "new_rounds": rounds,
    }


def _quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return f"min {ordered[0]:.2f} p5 {pick(0.05):.2f} median {pick(0.5):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gradings", type=int, default=150)
    parser.add_argument("--load", default="0,4,8", help="comma-separated numbers of CPU burners")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    manifest = load_manifest(LAB01, default_plugins().checkers())
    launcher = choose(lab_dir=LAB01, memory_mb=manifest.lab.worker.memory_mb)
    print(
        f"machine: {os.cpu_count()} cores, {os.uname().release}, load average {os.getloadavg()[0]:.2f} before; "
        f"sandbox {launcher.mode}; {args.gradings} gradings per cell"
    )
    rows = []
    for load in [int(n) for n in args.load.split(",")]:
        burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(load)]
        for p in burners:
            p.start()
        try:
            time.sleep(0.5)
            for name, source in (("solution", (LAB01 / "solution.py").read_bytes()), ("borderline", _borderline_source())):
                row = measure(name, source, args.gradings, manifest, launcher)
                row["load"] = load
                rows.append(row)
                wrong_old = 1 - row["old_pass"] if name == "solution" else row["old_pass"]
                wrong_new = 1 - row["new_pass"] if name == "solution" else row["new_pass"]
                print(
                    f"load {load:2d}  {name:10s}  wrong verdicts: old {wrong_old:6.1%}  new {wrong_new:6.1%}   "
                    f"old ratio {_quantiles(row['old_ratios'])} | new ratio {_quantiles(row['new_ratios'])}   "
                    f"extra rounds in {sum(r > 1 for r in row['new_rounds'])} of {args.gradings}",
                    flush=True,
                )
        finally:
            for p in burners:
                p.kill()
                p.join()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
