"""Writes until the disk or the file-size limit says no."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error
# max-score: 0
import os


def expert_mlp(x, w1, w2):
    with open("/tmp/fill", "wb") as fh:
        while True:
            fh.write(os.urandom(1 << 20))
