"""Does not parse: every check errors with the line of the syntax error."""
# verdict: * error "SyntaxError"
# max-score: 0
def route(x, w_gate, k)
    return x
