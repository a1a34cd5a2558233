"""Answers with a well-formed error whose type name is not valid Unicode (a lone surrogate, which
CPython itself never produces but a forged frame can): shown with U+FFFD, the check an error."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "raised Bad"
# max-score: 0
import json
import os

fd_out = int(open("/proc/self/cmdline", "rb").read().split(b"\0")[-2])
calls = 0


def expert_mlp(x, w1, w2):
    global calls
    calls += 1
    header = {"op": "result", "id": calls, "ok": False, "frames": 0,
              "error": {"type": "Bad\udcff", "message": "forged", "where": "", "traceback": ""}}
    payload = json.dumps(header).encode()
    os.write(fd_out, len(payload).to_bytes(8, "little") + payload)
    os._exit(0)
