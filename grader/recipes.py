"""Recipes: inputs described instead of sent, materialised identically by grader and worker.

A lab's generator returns a Recipe where an input is too large to cross the pipe (expert
weights of gigabytes). Both sides build it with ``grader/sandbox/boot/gpu.py`` from the same
seed; the grader's reference sees exactly the tensor the submission sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grader.sandbox.boot import gpu


@dataclass(frozen=True)
class Recipe:
    """How to make one tensor: kind, shape or routing sizes, dtype, seed (see gpu.materialize)."""

    spec: dict[str, Any] = field(hash=False)

    def materialize(self, device: str) -> Any:
        return gpu.materialize(self.spec, device)

    @property
    def dtype(self) -> str:
        return str(self.spec.get("dtype", "float32"))


def randn(shape: tuple[int, ...], dtype: str, seed: int, scale: float = 1.0, cache: bool = False) -> Recipe:
    return Recipe({"kind": "randn", "shape": list(shape), "dtype": dtype, "seed": int(seed), "scale": scale, "cache": cache})


def routing(tokens: int, experts: int, k: int, seed: int, ids_dtype: str = "int32") -> tuple[Recipe, Recipe]:
    """A (topk_weights, topk_ids) pair: top-k of a softmax over random logits, weights renormalised."""
    base = {"tokens": tokens, "experts": experts, "k": k, "seed": int(seed)}
    return (
        Recipe({"kind": "routing_weights", "dtype": "float32", **base}),
        Recipe({"kind": "routing_ids", "dtype": ids_dtype, **base}),
    )


def rand(shape: tuple[int, ...], dtype: str, seed: int, low: float, high: float, group: int = 0) -> Recipe:
    """Uniform values in [low, high); with ``group``, the first of every ``group`` values along the
    last dim is ``high`` (every group's largest magnitude the same)."""
    return Recipe({"kind": "rand", "shape": list(shape), "dtype": dtype, "seed": int(seed), "low": low, "high": high, "group": group})


def block_fp8(
    shape: tuple[int, int, int],
    seed: int,
    part: str,
    scale: float = 1.0,
    spread: float = 0.0,
    uniform: bool = False,
    positive: bool = False,
    dtype: str = "float32",
    cache: bool = False,
) -> Recipe:
    """One part ('weight', 'scale' or 'original') of expert weights (E, N, K) quantised to e4m3
    in 128x128 blocks (gpu.block_fp8); the same arguments but ``part`` give matching parts."""
    spec = {"kind": "block_fp8", "shape": list(shape), "seed": int(seed), "part": part, "scale": scale, "spread": spread}
    spec.update({"uniform": uniform, "positive": positive, "dtype": {"weight": "float8_e4m3fn", "scale": "float32"}.get(part, dtype)})
    spec.update({"source_dtype": dtype, "cache": cache})
    return Recipe(spec)
