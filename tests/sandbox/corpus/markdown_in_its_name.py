"""Uploaded under a name that closes the code span it is shown in and opens a link and a remote
image (scorecard.md, Gradescope's page), and prints the same. Every code span is delimited by a
longer run of backticks than the text holds, and printed text sits in a fenced block: the name
shows as text."""
# graded-as: hw` ![t](https:evil.example?t.png) [click](https:evil.example) <img src=x> `|x.py
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference passed
# max-score: 1
import numpy as np

print("``` ![t](https:evil.example?t.png) [click](https:evil.example)")


def expert_mlp(x, w1, w2):
    return np.maximum(x @ w1, 0.0) @ w2
