"""Looks for the grader's secrets: its environment, other processes' environments and
command lines. The worker's environment is cleared and other processes are invisible."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "snooped"
# max-score: 0
import glob
import os


def expert_mlp(x, w1, w2):
    seen = sorted(k for k in os.environ if "SECRET" in k or "GRADER" in k)
    others = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            if "SECRET" in open(path, "rb").read().decode(errors="replace"):
                others.append(path)
        except OSError:
            pass
    pids = sorted(int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*/"))
    raise RuntimeError(f"snooped: env={seen} secret_in={others} pids={pids}")
