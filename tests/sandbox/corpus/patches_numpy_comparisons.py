"""Patches numpy's comparison functions to always say "equal", then answers wrongly. The
comparisons happen in the grader's process, so the patch changes nothing."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed "differ from the reference"
# max-score: 0
import numpy as np
import numpy.testing

np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
np.isclose = lambda a, b, *r, **k: np.ones(np.broadcast(a, b).shape, dtype=bool)
numpy.testing.assert_allclose = lambda *a, **k: None
try:
    np.ndarray.__eq__ = lambda self, other: True
except TypeError:
    pass


def expert_mlp(x, w1, w2):
    return np.ones((x.shape[0], w2.shape[1]))
