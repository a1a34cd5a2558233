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
