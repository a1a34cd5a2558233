"""Caches outputs keyed on shape and replays them on later calls (batch-and-skip, replay):
every call gets fresh inputs, so replayed answers are wrong."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed
# max-score: 0
import numpy as np

CACHE = {}


def expert_mlp(x, w1, w2):
    key = (x.shape[1], w2.shape[1])
    if key not in CACHE:
        rng = np.random.default_rng(0)
        CACHE[key] = rng.standard_normal((1, w2.shape[1]))
    return np.repeat(CACHE[key], x.shape[0], axis=0)
