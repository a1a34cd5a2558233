"""Recurses without end: a RecursionError, reported as an error."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "RecursionError"
# max-score: 0


def expert_mlp(x, w1, w2):
    return expert_mlp(x, w1, w2)
