"""Tries to kill its parent, every process it can see, and the grader by name."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "kill attempts"
# max-score: 0
import os
import signal


def expert_mlp(x, w1, w2):
    outcomes = []
    for pid in (os.getppid(), 1, -1):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            outcomes.append(f"{pid}: sent")
        except OSError as exc:
            outcomes.append(f"{pid}: {type(exc).__name__}")
    raise RuntimeError(f"kill attempts: {outcomes}")
