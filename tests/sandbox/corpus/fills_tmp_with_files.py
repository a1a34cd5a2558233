"""Fills its temporary folder with many files, each under the file-size limit, hoping the
folder has no cap of its own. The private /tmp is bounded (bwrap --size, or a tmpfs charged to
the memory budget, or a small /dev/shm); it stops by itself at 2 GiB, and says how much it held."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error
# max-score: 0
import os
import tempfile

CHUNK = 32 << 20


def expert_mlp(x, w1, w2):
    folder, held, why = tempfile.gettempdir(), 0, "stopped at 2 GiB"
    block = os.urandom(1 << 20) * 32
    try:
        while held < 2048:
            with open(os.path.join(folder, f"fill-{held}"), "wb") as fh:
                fh.write(block)
            held += CHUNK >> 20
    except OSError as exc:
        why = exc.strerror
    raise RuntimeError(f"tmp holds {held} MiB ({why})")
