"""Returns NaN everywhere, hoping NaN compares as a wildcard: NaN never passes."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed "NaN never passes"
# max-score: 0
import numpy as np


def expert_mlp(x, w1, w2):
    return np.full((x.shape[0], w2.shape[1]), np.nan)
