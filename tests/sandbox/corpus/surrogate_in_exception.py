"""Raises an exception whose message holds lone surrogates (not valid Unicode): strings are made
valid once, at the boundary; result.json, the scorecard and JUnit are all written and the check
is an error."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "raised ValueError: message"
# max-score: 0


def expert_mlp(x, w1, w2):
    raise ValueError("message \udcfe with a lone surrogate \ud800")
