"""Answers with a well-formed reply whose array announces an impossible shape (an empty array of
10**30 columns): the loader refuses the shape before numpy sees it; an error of this call only."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "invalid array"
# max-score: 0
import io
import json
import os

import numpy as np

fd_out = int(open("/proc/self/cmdline", "rb").read().split(b"\0")[-2])
calls = 0


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(8, "little") + payload


def expert_mlp(x, w1, w2):
    global calls
    calls += 1
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (0, 10**30)})
    header = {"op": "result", "id": calls, "ok": True, "tuple": False, "py": "ndarray", "frames": 1,
              "values": [{"t": "ndarray", "f": 0, "py": "ndarray", "exact": True}]}
    os.write(fd_out, frame(json.dumps(header).encode()) + frame(buf.getvalue()))
    os._exit(0)
