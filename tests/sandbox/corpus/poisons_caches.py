"""Tries to poison what the next submission or the grader would load: site-packages, the
interpreter's folders, caches. All of it is read-only or private to this run."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "poisoned nothing"
# max-score: 0
import os
import sys

import numpy


def expert_mlp(x, w1, w2):
    targets = [
        os.path.join(os.path.dirname(numpy.__file__), "poison.py"),
        os.path.join(os.path.dirname(os.__file__), "sitecustomize.py"),
        os.path.join(sys.prefix, "poison.pth"),
        "/usr/lib/poison",
    ]
    written = []
    for target in targets:
        try:
            with open(target, "w") as fh:
                fh.write("import os\n")
            written.append(target)
        except OSError:
            pass
    raise RuntimeError(f"poisoned {written}" if written else "poisoned nothing")
