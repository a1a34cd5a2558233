"""Values as the grader handles them: torch tensors recognised without importing torch, and any
value turned into a plain numpy array (bfloat16 and float8 widened exactly to float32)."""

from __future__ import annotations

from typing import Any

import numpy as np

from grader.sandbox.boot import wire


def is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def bit_pattern(t: Any) -> tuple[np.ndarray, str] | None:
    """A CPU tensor of a dtype numpy lacks (``wire.BIT_DTYPES``) as its bit patterns, contiguous,
    with the dtype's name; None for any other dtype."""
    name = str(t.dtype).removeprefix("torch.")
    bits = wire.BIT_DTYPES.get(name)
    if bits is None:
        return None
    import torch

    same_width = {1: torch.uint8, 2: torch.int16}[bits.itemsize]
    return t.contiguous().view(same_width).numpy().view(bits), name


def to_numpy(value: Any) -> np.ndarray:
    """A value as a plain numpy array of its own (bfloat16 and float8 widened exactly to float32)."""
    if is_tensor(value):
        t = value.detach().cpu()
        carried = bit_pattern(t)
        if carried is not None:
            return wire.widen_bits(*carried)
        return t.contiguous().numpy().copy()
    return np.array(value, copy=True)
