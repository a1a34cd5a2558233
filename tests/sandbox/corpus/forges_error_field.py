"""Answers with a reply whose 'error' is a string, not an object, and whose type names are not
valid Unicode: a malformed answer is an error of that call, never a crash of the grader."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "invalid answer"
# max-score: 0
import json
import os

fd_out = int(open("/proc/self/cmdline", "rb").read().split(b"\0")[-2])
calls = 0


def expert_mlp(x, w1, w2):
    global calls
    calls += 1
    header = {"op": "result", "id": calls, "ok": False, "error": "boom \ud800", "frames": 0}
    payload = json.dumps(header).encode()
    os.write(fd_out, len(payload).to_bytes(8, "little") + payload)
    os._exit(0)
