"""Values as the grader handles them: torch tensors recognised without importing torch, and any
value turned into a plain numpy array (bfloat16 widened exactly to float32)."""

from __future__ import annotations

from typing import Any

import numpy as np

from grader.sandbox.boot import wire


def is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def to_numpy(value: Any) -> np.ndarray:
    """A value as a plain numpy array of its own (bfloat16 widened exactly to float32)."""
    if is_tensor(value):
        t = value.detach()
        if str(t.dtype) == "torch.bfloat16":
            import torch

            return wire.bf16_to_f32(t.view(torch.int16).cpu().numpy().view(np.uint16))
        return t.cpu().contiguous().numpy().copy()
    return np.array(value, copy=True)
