"""route sleeps forever: its checks time out, and nothing else waits on it."""
# verdict: * error "defines no function"
# verdict: route-matches-reference error "did not return within"
# verdict: route-weights-are-a-distribution error "already ran past its"
# max-score: 0
import time


def route(x, w_gate, k):
    time.sleep(10**6)
