"""Ends its process from inside a call, with status 0 and no answer."""
# verdict: * error "defines no function"
# verdict: route-matches-reference error "exited with status 0 during route"
# verdict: route-weights-are-a-distribution error "exited with status 0 during route"
# max-score: 0
import os


def route(x, w_gate, k):
    os._exit(0)
