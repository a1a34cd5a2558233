"""A lab on the grader's side: its manifest, its inputs, and its reference solution.

The solution and the lab's ``lab.py`` (generators and claims) are the lab author's trusted
code; they run in the grader's process. Inputs and reference outputs are cached per process,
keyed by the seed, so a TA batch computes each reference once for a whole class.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from grader import dims as dimexpr
from grader.errors import InfrastructureError
from grader.manifest import FunctionSpec, LabManifest
from grader.recipes import Recipe
from grader.seeds import Seeds
from grader.tensors import is_tensor, to_numpy


@dataclass
class Case:
    """One set of inputs for a function, with the dims it was made from."""

    set: str
    index: int
    total: int
    dims: dict[str, int]
    inputs: dict[str, Any]

    @property
    def label(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return f"case {self.index + 1} of {self.total}" + (f" ({dims})" if dims else "")


def split_outputs(function: str, spec: FunctionSpec, result: Any) -> dict[str, np.ndarray]:
    names = [o.name for o in spec.returns]
    values = list(result) if len(names) > 1 else [result]
    if len(values) != len(names):
        raise InfrastructureError(f"the reference {function} returned {len(values)} values, the manifest names {len(names)}")
    return {n: to_numpy(v) for n, v in zip(names, values)}


def load_module(path: Path, name: str) -> ModuleType:
    """Import a lab author's file under a unique module name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InfrastructureError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise InfrastructureError(f"the lab's {path.name} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


class Lab:
    """A loaded lab: manifest, lazily imported solution and support module, cached inputs."""

    def __init__(self, manifest: LabManifest) -> None:
        self.manifest = manifest
        self.directory = manifest.directory
        self._cases: dict[tuple[Any, ...], list[Case]] = {}
        self._references: dict[tuple[Any, ...], dict[str, np.ndarray]] = {}
        self.cache: dict[tuple[Any, ...], Any] = {}
        """Per-process store for what a checker derives once from the lab (the speed check's
        inputs and baseline answers); a batch worker reuses it across submissions."""

    @property
    def id(self) -> str:
        return self.manifest.id

    def _module_name(self, part: str) -> str:
        # The folder is part of the name: two copies of a lab (a test's, a course's) never share modules.
        tag = hashlib.sha256(str(self.directory.resolve()).encode()).hexdigest()[:10]
        return f"grader_lab_{self.id.replace('-', '_')}_{part}_{tag}"

    @property
    def solution(self) -> ModuleType:
        return load_module(self.directory / "solution.py", self._module_name("solution"))

    @property
    def support(self) -> ModuleType:
        return load_module(self.directory / self.manifest.lab.support, self._module_name("support"))

    def support_function(self, name: str) -> Any:
        fn = getattr(self.support, name, None)
        if not callable(fn):
            raise InfrastructureError(f"{self.manifest.lab.support} defines no function {name!r}")
        return fn

    # -- inputs -------------------------------------------------------------------------------

    def cases(self, case_set: str, seeds: Seeds, check_id: str) -> list[Case]:
        key = (case_set, check_id, seeds.key)
        if key not in self._cases:
            self._cases[key] = self._make_cases(case_set, seeds, check_id)
        return self._cases[key]

    def _make_cases(self, case_set: str, seeds: Seeds, check_id: str) -> list[Case]:
        spec = self.manifest.cases[case_set]
        generator = self.support_function(spec.generator)
        total = len(spec.fixed) + spec.random
        out: list[Case] = []
        for i in range(total):
            rng = seeds.rng(check_id, case_set, i)
            if i < len(spec.fixed):
                dims = dict(spec.fixed[i])
            else:
                dims = {}
                for name, (low, high) in spec.dims.items():
                    lo, hi = dimexpr.evaluate(low, dims), dimexpr.evaluate(high, dims)
                    dims[name] = int(rng.integers(lo, max(lo, hi) + 1))
            try:
                made = generator(rng, **dims, **spec.params)
            except Exception as exc:
                raise InfrastructureError(
                    f"the generator {spec.generator} failed on {dims}: {type(exc).__name__}: {exc}"
                ) from exc
            # A generator may return (inputs, more dims), e.g. sizes that follow from a model index.
            inputs, extra = made if isinstance(made, tuple) else (made, {})
            out.append(Case(case_set, i, total, {**dims, **extra}, dict(inputs)))
        return out

    # -- the reference --------------------------------------------------------------------------

    def implementation(self, function: str, reference: str | None = None) -> Any:
        """The trusted callable for ``function``: the solution's, or ``lab:<name>`` from lab.py."""
        if reference and reference.startswith("lab:"):
            return self.support_function(reference[4:])
        name = reference or function
        fn = getattr(self.solution, name, None)
        if not callable(fn):
            raise InfrastructureError(f"the lab's solution.py defines no {name}")
        return fn

    def arguments(
        self, function: str, inputs: Mapping[str, Any], device: str | None = None, names: Sequence[str] | None = None
    ) -> list[Any]:
        """Private copies of a case's inputs for ``function`` (or the inputs ``names``), as trusted
        code receives them (numpy or torch on ``device``; recipes materialised)."""
        spec = self.manifest.functions[function]
        missing = [name for name in names or () if name not in inputs]
        if missing:
            raise InfrastructureError(f"the lab's cases for {function} give no input {', '.join(missing)} for its reference")
        return [_private_copy(inputs[name], spec.arrays, device) for name in (names or spec.args)]

    def call_solution(
        self,
        function: str,
        inputs: Mapping[str, Any],
        device: str | None = None,
        reference: str | None = None,
        names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the reference for ``function`` on copies of ``inputs`` (its arguments, or the inputs
        ``names``) and return numpy outputs by name."""
        spec = self.manifest.functions[function]
        fn = self.implementation(function, reference)
        args = self.arguments(function, inputs, device, names)
        try:
            result = fn(*args)
        except Exception as exc:
            raise InfrastructureError(f"the reference {function} raised {type(exc).__name__}: {exc}") from exc
        return split_outputs(function, spec, result)

    def reference(
        self,
        function: str,
        case: Case,
        key: tuple[Any, ...],
        device: str | None = None,
        reference: str | None = None,
        names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        cache_key = (function, reference, tuple(names or ()), case.set, case.index, *key)
        if cache_key not in self._references:
            self._references[cache_key] = self.call_solution(function, case.inputs, device, reference, names)
        return self._references[cache_key]


def _private_copy(value: Any, arrays: str, device: str | None) -> Any:
    if isinstance(value, Recipe):
        return value.materialize(device or "cpu")
    if is_tensor(value):
        return value.detach().clone().to(device or "cpu")
    if isinstance(value, np.ndarray):
        if arrays == "torch":
            import torch

            return torch.from_numpy(value.copy()).to(device or "cpu")
        return value.copy()
    return value
