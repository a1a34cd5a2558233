"""Tries to reach the network (DNS and a raw TCP connection) to fetch answers."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "network"
# max-score: 0
import socket


def expert_mlp(x, w1, w2):
    outcomes = []
    for attempt in (
        lambda: socket.getaddrinfo("pypi.org", 443),
        lambda: socket.create_connection(("1.1.1.1", 53), timeout=1),
        lambda: socket.create_connection(("127.0.0.1", 22), timeout=1),
    ):
        try:
            attempt()
            outcomes.append("reached")
        except OSError as exc:
            outcomes.append(type(exc).__name__)
    raise RuntimeError(f"network attempts: {outcomes}")
