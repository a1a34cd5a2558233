"""Asks for 16 GiB at once: the address-space limit turns it into a MemoryError."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "MemoryError"
# max-score: 0


def expert_mlp(x, w1, w2):
    block = bytearray(16 << 30)
    return block
