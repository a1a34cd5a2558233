"""A correct expert_mlp that prints 80 MiB of debug output in a loop (past the 64 MiB file-size
limit): output is kept up to a cap and the rest discarded; the submission's writes never fail,
so it loses nothing."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference passed
# max-score: 1
import sys

import numpy as np

LINE = "debug: " + "x" * (1 << 20) + "\n"


def expert_mlp(x, w1, w2):
    for _ in range(10):
        sys.stdout.write(LINE)
    sys.stdout.flush()
    return np.maximum(x @ w1, 0.0) @ w2
