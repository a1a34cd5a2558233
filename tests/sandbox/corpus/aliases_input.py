"""Returns a view of its input instead of a new array (D == output width here)."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "memory shared with its argument"
# max-score: 0


def expert_mlp(x, w1, w2):
    return x[:, : w2.shape[1]] if x.shape[1] >= w2.shape[1] else x
