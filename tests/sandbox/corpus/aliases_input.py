"""Returns a view of its input instead of a new array. Answers cross the boundary as copies, so
sharing memory cannot touch the grader; the view is simply a wrong answer."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference failed "differ from the reference"
# max-score: 0


def expert_mlp(x, w1, w2):
    return x[:, : w2.shape[1]] if x.shape[1] >= w2.shape[1] else x
