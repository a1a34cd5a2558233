EXERCISE = "lab-01-moe-routing"

def route(x, w_gate, k)
    return x
