"""What hardware the grader can use; torch is imported only when a lab needs a GPU."""

from __future__ import annotations

import functools
import os

NO_GPU_ENV = "GRADER_NO_GPU"


@functools.lru_cache(maxsize=1)
def cuda_device() -> str | None:
    """The name of the first CUDA device, or None (no torch, no CUDA, or GRADER_NO_GPU set)."""
    if os.environ.get(NO_GPU_ENV):
        return None
    try:
        import torch
    except ImportError:
        return None
    try:
        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # a broken driver is the same as no GPU for grading purposes
        return None
    return None
