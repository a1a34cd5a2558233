"""A GPU worker's Triton cache: its own private folder, read through to the reference's kernels.

The grader starts a GPU worker with ``TRITON_CACHE_MANAGER=kernel_cache:ReadThroughCacheManager``
and ``GRADER_REFERENCE_KERNELS`` naming the read-only folder of the kernels the grader compiled
from the lab's solution (grader/gpu_cache.py). Triton looks a kernel up by the hash of its source,
constants and options: the worker's private cache (``TRITON_CACHE_DIR``, in its private /tmp)
first, then the reference's folder. What the worker compiles goes to its private cache only.
The reference's folder cannot be listed, only opened by name, so a submission finds there exactly
the kernels whose source it already has. Imports only Triton, which the worker has.
"""

from __future__ import annotations

import json
import os
from typing import Any

from triton.runtime.cache import FileCacheManager

REFERENCE_ENV = "GRADER_REFERENCE_KERNELS"


class ReadThroughCacheManager(FileCacheManager):  # type: ignore[misc]
    """Triton's file cache over the private folder, falling back to the reference's (read-only)."""

    def __init__(self, key: str, override: bool = False, dump: bool = False) -> None:
        super().__init__(key, override=override, dump=dump)
        base = os.environ.get(REFERENCE_ENV)
        self.reference = os.path.join(base, key) if base and not (override or dump) else None

    def _reference_file(self, filename: str) -> str | None:
        if self.reference is None or os.sep in filename:
            return None
        path = os.path.join(self.reference, filename)
        return path if os.path.isfile(path) and os.access(path, os.R_OK) else None

    def get_file(self, filename: str) -> str | None:
        return super().get_file(filename) or self._reference_file(filename)

    def get_group(self, filename: str) -> dict[str, str] | None:
        own = super().get_group(filename)
        if own is not None:
            return own
        group = self._reference_file(f"__grp__{filename}")
        if group is None:
            return None
        try:
            with open(group) as fh:
                children: Any = json.load(fh).get("child_paths")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(children, dict):
            return None
        found: dict[str, str] = {}
        for name, path in children.items():
            # The group names the files where the grader wrote them; here they are in the same folder.
            local = self._reference_file(os.path.basename(str(path)))
            if local is None:
                return None
            found[str(name)] = local
        return found
