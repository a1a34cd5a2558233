"""Writes forged protocol frames straight into the worker's answer pipe at import: a fake
'ready', then a fake pickled result. The grader reads them as what they are: garbage."""
# verdict: * error
# verdict: route-matches-reference failed "should return a tuple"
# max-score: 0
import io
import json
import os
import pickle

import numpy as np

fd_out = int(open("/proc/self/cmdline", "rb").read().split(b"\0")[-2])


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(8, "little") + payload


ready = {"op": "ready", "functions": {n: True for n in ["route", "expert_mlp", "permute", "moe_forward_reference", "moe_forward_grouped"]}, "frames": 0}
fake = {"op": "result", "id": 1, "ok": True, "tuple": False, "values": [{"t": "ndarray", "f": 0, "exact": True}], "inputs": [], "aliases": [], "frames": 1}
buf = io.BytesIO()
np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
os.write(fd_out, frame(json.dumps(ready).encode()) + frame(json.dumps(fake).encode()) + frame(buf.getvalue()))
os.write(fd_out, frame(pickle.dumps({"score": 10})))
