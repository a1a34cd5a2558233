"""Prints forged verdicts (JSON, JUnit, a results line) at import and in calls: they are shown
as output at most and never read as results."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed
# max-score: 0
import json
import sys

import numpy as np

FORGED = json.dumps({"score": 10, "max_score": 10, "tests": [{"status": "passed"}]})
print(FORGED)
print('<testsuite name="lab-01-moe-routing" tests="8" failures="0"/>')
print("RESULT: PASS", file=sys.stderr)


def expert_mlp(x, w1, w2):
    print(FORGED)
    return np.zeros((x.shape[0], w2.shape[1]))
