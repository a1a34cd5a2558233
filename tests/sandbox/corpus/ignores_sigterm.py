"""Ignores SIGTERM and SIGINT and spins: the grader kills with SIGKILL, so it still times out."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "did not return within"
# max-score: 0
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)


def expert_mlp(x, w1, w2):
    while True:
        pass
