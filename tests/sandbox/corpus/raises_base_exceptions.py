"""Raises KeyboardInterrupt and SystemExit from calls: errors, caught per call."""
# verdict: * error "defines no function"
# verdict: route-matches-reference error "KeyboardInterrupt"
# verdict: route-weights-are-a-distribution error "KeyboardInterrupt"
# verdict: expert-mlp-matches-reference error "called sys.exit(3)"
# max-score: 0
import sys


def route(x, w_gate, k):
    raise KeyboardInterrupt


def expert_mlp(x, w1, w2):
    sys.exit(3)
