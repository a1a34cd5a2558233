"""Crashes the interpreter with a null-pointer read in a call: a crash, reported as one."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "SIGSEGV"
# max-score: 0
import ctypes


def expert_mlp(x, w1, w2):
    return ctypes.string_at(0)
