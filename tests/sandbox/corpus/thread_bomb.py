"""Starts ten thousand threads: thread creation fails and the call errors."""
# verdict: * error "defines no function"
# verdict: permute-bookkeeping error
# max-score: 0
import threading
import time


def permute(topk_ids, num_experts):
    for _ in range(10000):
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    return None
