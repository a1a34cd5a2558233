"""Lab manifests: pydantic models loaded from each lab's ``manifest.toml``.

The models are the manifest's documentation (every field has a description) and the source
of the JSON schema (``grader validate --schema``). Checks form a discriminated union on
``kind``; the members are the ``Options`` models of the registered checkers, built-in and
third-party alike, so a plugin's checker validates exactly like a built-in one.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, Union

import numpy as np
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from grader import dims as dimexpr
from grader.errors import ManifestError, Problem
from grader.results import Visibility
from grader.sandbox.boot import plain, wire

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class CheckerType(Protocol):
    """What the manifest needs of a checker class: its ``kind`` and its options model."""

    name: ClassVar[str]
    Options: ClassVar[type[CheckSpec]]

MANIFEST = "manifest.toml"
DTYPE_CATEGORIES = ("int", "float", "bool", "number")


class Hardware(str, Enum):
    """What a lab or a check needs to run."""

    cpu = "cpu"
    gpu = "gpu"
    gpu_optional = "gpu-optional"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlainLimits(Strict):
    """Bounds on a plain value (JSON-like: strings, numbers, lists, dicts) a function returns."""

    max_bytes: int = Field(default=16 << 20, ge=2, le=1 << 30, description="Size of its JSON text.")
    max_depth: int = Field(default=16, ge=1, le=64, description="Nesting of lists and dicts (a list of dicts is 2).")
    max_items: int = Field(default=1_000_000, ge=1, description="Values in all: every list item, dict entry and scalar.")
    max_string: int = Field(default=100_000, ge=1, description="Characters of any one string, keys included.")
    allow_nan: bool = Field(default=False, description="Whether NaN and infinities are accepted (JSON proper has neither).")

    def bounds(self) -> plain.Limits:
        return plain.Limits(**self.model_dump())


class OutputSpec(Strict):
    """One value a function returns."""

    name: str = Field(description="Name used in messages and by checks, e.g. 'topk_ids'.")
    type: Literal["ndarray", "tensor", "scalar", "plain"] = Field(
        default="ndarray",
        description="What the function must return: a numpy array, a torch tensor, a Python/numpy scalar, or a "
        "plain value (strings, numbers, lists, dicts; carried as strict, bounded JSON, never pickled).",
    )
    form: str | None = Field(
        default=None,
        description="For a plain value: what it must look like, e.g. 'list[dict[str, any]]', 'dict[str, float]', "
        "'str' (any, str, int, float, number, bool, none, list[...], dict[str, ...], A | B).",
        examples=["list[str]", "dict[str, float]"],
    )
    limits: PlainLimits | None = Field(default=None, description="For a plain value: its bounds (defaults apply if omitted).")
    dtype: str = Field(
        default="number",
        description="A category ('int', 'float', 'bool', 'number'), an exact dtype ('float32', 'bfloat16', 'float8_e4m3fn', ...) "
        "or 'like:<argument>' for the dtype of that argument.",
        examples=["int", "float32"],
    )
    shape: list[int | str] | None = Field(
        default=None,
        description="Dimension expressions over the case's dims, e.g. ['T', 'k'] or ['E+1']; [] is a scalar; omitted is unchecked.",
    )

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value in DTYPE_CATEGORIES or value in wire.BIT_DTYPES or (value.startswith("like:") and value[5:].isidentifier()):
            return value
        try:
            np.dtype(value)
        except TypeError:
            raise ValueError(f"a dtype category {DTYPE_CATEGORIES} or a numpy dtype name") from None
        return value

    @field_validator("shape")
    @classmethod
    def _parse_shape(cls, value: list[int | str] | None) -> list[int | str] | None:
        for item in value or []:
            try:
                dimexpr.parse(item)
            except dimexpr.DimError as exc:
                raise ValueError(f"dimension expressions ({exc})") from None
        return value

    @field_validator("form")
    @classmethod
    def _parse_form(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                plain.parse_form(value)
            except plain.PlainError as exc:
                raise ValueError(f"a form such as 'list[dict[str, any]]' ({exc})") from None
        return value

    @model_validator(mode="after")
    def _plain_fields(self) -> OutputSpec:
        if self.type == "plain":
            if self.shape is not None or self.dtype != "number":
                raise ValueError("a plain value has a form, not a dtype or a shape")
        elif self.form is not None or self.limits is not None:
            raise ValueError("form and limits belong to plain values (type = 'plain')")
        return self

    @property
    def plain_form(self) -> Any:
        """The parsed form of a plain value ('any' when none is given)."""
        return plain.parse_form(self.form or "any")

    @property
    def plain_limits(self) -> plain.Limits:
        return (self.limits or PlainLimits()).bounds()


class FunctionSpec(Strict):
    """A function the submission must define."""

    args: list[str] = Field(description="Parameter names, in order; a case's inputs are matched by these names.")
    returns: list[OutputSpec] = Field(min_length=1, description="What it returns; more than one means a tuple.")
    points: float | None = Field(
        default=None, ge=0, description="Total points of this function's checks (validated against their sum)."
    )
    summary: str = Field(default="", description="One line for `grader list` and the handout.")
    arrays: Literal["numpy", "torch"] = Field(
        default="numpy", description="Whether array arguments are handed over as numpy arrays or torch tensors."
    )

    @property
    def signature(self) -> str:
        return f"({', '.join(self.args)})"


class Tolerance(Strict):
    """Closeness: elementwise |got - expected| <= atol + rtol * |expected|, or, when `norm` is set,
    the relative Frobenius error ||got - expected|| / ||expected|| <= norm (for low precision), or,
    when `calc_diff` is set, DeepGEMM's 1 - 2<got, expected> / (||got||^2 + ||expected||^2) <= calc_diff."""

    rtol: float = Field(default=0.0, ge=0, description="Relative tolerance, elementwise.")
    atol: float = Field(default=0.0, ge=0, description="Absolute tolerance, elementwise.")
    norm: float | None = Field(
        default=None, gt=0, description="Bound on the relative Frobenius error; replaces the elementwise test."
    )
    calc_diff: float | None = Field(
        default=None,
        gt=0,
        description="Bound on DeepGEMM's calc_diff, 1 - 2<got, expected> / (||got||^2 + ||expected||^2), the metric of "
        "its FP8 tests (about half the squared relative error); replaces the elementwise test.",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> Tolerance:
        if self.norm is not None and self.calc_diff is not None:
            raise ValueError("one of norm and calc_diff, not both")
        return self


class CaseSet(Strict):
    """Inputs for checks: fixed awkward cases plus seeded random ones, made by a generator in the lab's lab.py."""

    generator: str = Field(description="Function in lab.py: generator(rng, **dims, **params) -> {arg name: value}.")
    fixed: list[dict[str, int]] = Field(default_factory=list, description="Cases given dim by dim.")
    random: int = Field(default=0, ge=0, description="How many random cases to draw from `dims`.")
    dims: dict[str, tuple[int | str, int | str]] = Field(
        default_factory=dict,
        description="Inclusive [low, high] per dim for random cases, drawn in order; bounds may name earlier dims.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Constants passed to the generator.")

    @field_validator("dims")
    @classmethod
    def _parse_bounds(cls, value: dict[str, tuple[int | str, int | str]]) -> dict[str, tuple[int | str, int | str]]:
        seen: set[str] = set()
        for name, bounds in value.items():
            for bound in bounds:
                try:
                    unknown = dimexpr.names(bound) - seen
                except dimexpr.DimError as exc:
                    raise ValueError(f"dimension expressions ({exc})") from None
                if unknown:
                    raise ValueError(f"bounds of {name!r} that name only earlier dims, not {sorted(unknown)}")
            seen.add(name)
        return value


class WorkerSettings(Strict):
    """How the submission's worker process is started."""

    imports: list[str] = Field(
        default_factory=list, description="Modules imported before the submission (e.g. 'torch'), outside its time."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for every worker.")
    cpu_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for the worker of CPU checks (e.g. TRITON_INTERPRET=1)."
    )
    gpu_env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the worker of GPU checks.")
    memory_mb: int = Field(default=4096, ge=256, description="Address-space limit on the CPU.")
    threads: int = Field(
        default=1, ge=1, description="BLAS/OpenMP threads in the worker (1 keeps timings steady on small machines)."
    )
    poison_uninitialized: bool = Field(
        default=False,
        description="In every call but the timed and profiled ones, memory torch allocates without initialising it "
        "(torch.empty) reads as NaN, integers as their largest value, so a kernel that reads what it never wrote fails "
        "(torch's deterministic mode, warnings only); for labs whose functions take torch tensors.",
    )
    children_outlive_calls: bool = Field(
        default=False,
        description="Let processes the submission starts live from one call to the next (e.g. a worker pool); "
        "by default they are killed when the call that started them returns.",
    )


class LabInfo(Strict):
    """The lab as a whole."""

    id: str = Field(pattern=r"^lab-\d\d-[a-z0-9-]+$", description="The lab id; equals the lab's folder name.")
    title: str = Field(description="The lab's title, as `grader list` shows it.")
    phase: str = Field(default="", description="The course phase the lab belongs to.")
    hardware: Hardware = Field(default=Hardware.cpu, description="What full grading needs.")
    visibility: Visibility = Field(default=Visibility.visible, description="Default visibility of checks.")
    time_limit_s: float = Field(default=10.0, gt=0, description="Default wall-clock limit of one call.")
    import_time_limit_s: float = Field(default=20.0, gt=0, description="Limit for importing the submission.")
    deadline_s: float = Field(
        default=600.0,
        gt=0,
        description="Wall-clock limit of a whole grading; checks not finished by then are errors "
        "(`--deadline` overrides it; an LMS sets it under its own timeout).",
    )
    support: str = Field(default="lab.py", description="The lab's grader-side module: generators and claims.")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="How the submission's worker starts.")
    requires: list[str] = Field(
        default_factory=list,
        description="Python distributions grading the lab needs beyond the grader's own, as pip requirements "
        "(e.g. 'triton>=3.0'). Checked before anything is graded: where one is missing, the result is not "
        "gradable and names what to install (the grader's extra that provides it, where one does).",
    )

    @field_validator("requires")
    @classmethod
    def _requirements(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                Requirement(text)
            except InvalidRequirement as exc:
                raise ValueError(f"{text!r} is not a pip requirement ({exc})") from None
        return value


class CheckSpec(Strict):
    """Fields every check has; a checker's ``Options`` subclasses this and fixes ``kind``."""

    kind: str = Field(description="The checker that runs this check.")
    title: str = Field(description="What the check proves, in a student's words.")
    function: str = Field(description="The function the check is about (a key of [functions]).")
    points: float = Field(ge=0, description="Points for passing.")
    visibility: Visibility | None = Field(default=None, description="Overrides the lab's default.")
    requires: Hardware = Field(default=Hardware.cpu, description="'gpu' checks are skipped without CUDA.")
    time_limit_s: float | None = Field(default=None, gt=0, description="Overrides the lab's per-call limit.")
    hint: str = Field(default="", description="What to look at when the check fails.")
    after: list[str] = Field(
        default_factory=list,
        description="Checks (earlier in the manifest) that must pass first; until they do this one is skipped.",
    )
    leaderboard: dict[str, Literal["asc", "desc"]] = Field(
        default_factory=dict,
        description="Measured numbers (keys of the check's details) to publish on an LMS leaderboard, "
        "each with its order: 'desc' when bigger is better.",
    )

    def problems(self, manifest: LabManifest) -> list[tuple[str, str, str]]:
        """Cross-references this check makes, as (key below the check, expected, received)."""
        return []


def case_set_problems(manifest: LabManifest, name: str, key: str = "cases") -> list[tuple[str, str, str]]:
    """A check's reference to a case set, as problems() reports it."""
    return [] if name in manifest.cases else [(key, f"one of {sorted(manifest.cases)}", repr(name))]


def support_function_problems(manifest: LabManifest, name: str | None, key: str) -> list[tuple[str, str, str]]:
    """A check's reference to a function of the lab's support module (lab.py); None is no reference."""
    if name is None or name in (_defined_functions(manifest.directory / manifest.lab.support) or set()):
        return []
    return [(key, f"a function defined in {manifest.lab.support}", repr(name))]


def tolerance_problems(manifest: LabManifest, name: str, key: str = "tolerance") -> list[tuple[str, str, str]]:
    """A check's reference to a named tolerance ('exact' is built in)."""
    if name == "exact" or name in manifest.tolerances:
        return []
    return [(key, f"'exact' or one of {sorted(manifest.tolerances)}", repr(name))]


class LabManifest(Strict):
    """A lab's contract: its functions, inputs, tolerances and checks."""

    lab: LabInfo
    functions: dict[str, FunctionSpec] = Field(description="The functions a submission defines, by name.")
    tolerances: dict[str, Tolerance] = Field(default_factory=dict, description="Named tolerances; 'exact' is built in.")
    cases: dict[str, CaseSet] = Field(default_factory=dict, description="Named input sets for checks.")
    checks: dict[str, CheckSpec] = Field(description="The checks, by id, in the order they run.")

    _path: Path = PrivateAttr(default=Path(MANIFEST))

    @property
    def id(self) -> str:
        return self.lab.id

    @property
    def path(self) -> Path:
        """The manifest file this was loaded from."""
        return self._path

    @property
    def directory(self) -> Path:
        return self._path.parent

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.checks.values())

    def function_points(self, name: str) -> float:
        return sum(c.points for c in self.checks.values() if c.function == name)

    def tolerance(self, name: str) -> Tolerance:
        if name == "exact":
            return Tolerance(rtol=0.0, atol=0.0)
        return self.tolerances[name]


@functools.lru_cache(maxsize=8)
def manifest_model(checkers: tuple[type[CheckerType], ...]) -> type[LabManifest]:
    """The LabManifest model whose ``checks`` accept exactly these checkers' options."""
    options = tuple(c.Options for c in checkers)
    union: Any = options[0] if len(options) == 1 else Annotated[Union[options], Field(discriminator="kind")]  # noqa: UP007
    return create_model(
        "LabManifest",
        __base__=LabManifest,
        checks=(dict[str, union], Field(description="The checks, by id, in the order they run.")),
    )


def json_schema(checkers: Sequence[type[CheckerType]]) -> dict[str, Any]:
    """The JSON schema of manifests, for editors and the docs."""
    schema = manifest_model(tuple(checkers)).model_json_schema()
    schema["title"] = "grader lab manifest"
    return schema


# --- loading and error rendering -------------------------------------------------------------

_EXPECTED = {
    "missing": "a value (this key is required)",
    "extra_forbidden": "no such key",
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _dotted(loc: Sequence[int | str], tags: Iterable[str]) -> str:
    out = ""
    tagset = set(tags)
    for i, part in enumerate(loc):
        # Pydantic puts the union tag into the location after a discriminated item; drop it.
        if isinstance(part, str) and part in tagset and i >= 2 and loc[i - 2] == "checks":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _key(err: Any, tags: Iterable[str]) -> str:
    key = _dotted(err["loc"], tags)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        key += "." + str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'")
    return key


def _expected(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        return "kind to be one of " + ctx.get("expected_tags", "?")
    if kind == "union_tag_not_found":
        return "a 'kind' key"
    if kind == "literal_error":
        return "one of " + str(ctx.get("expected", "?"))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "?")
        return f"a number {sym} {bound:g}" if isinstance(bound, (int, float)) else f"a number {sym} {bound}"
    if kind == "string_pattern_mismatch":
        return f"a string matching {ctx.get('pattern', '?')}"
    if kind == "too_short":
        return f"at least {ctx.get('min_length', '?')} item(s)"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return _EXPECTED.get(kind, err["msg"])


def _received(err: Any) -> str:
    if err["type"] == "missing":
        return "nothing"
    if err["type"] == "union_tag_invalid":
        return repr((err.get("ctx") or {}).get("tag"))
    text = repr(err.get("input"))
    return text if len(text) <= 60 else text[:57] + "..."


def _tags(checkers: Sequence[type[CheckerType]]) -> list[str]:
    return [c.name for c in checkers]


def load_manifest(path: Path, checkers: Sequence[type[CheckerType]], strict: bool = False) -> LabManifest:
    """Load and validate one manifest; raise ManifestError listing every problem. ``strict``
    (what ``grader validate`` uses) also requires the files a lab ships to students and CI:
    starter.py defining every function, README.md and test_lab.py."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError([Problem(path, "", "a manifest file", "no such file")]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(path, "", "valid TOML", str(exc))]) from None
    model = manifest_model(tuple(checkers))
    try:
        manifest = model.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(path, _key(e, _tags(checkers)), _expected(e), _received(e)) for e in exc.errors(include_url=False)
        ]
        raise ManifestError(problems) from None
    manifest._path = path
    problems = semantic_problems(manifest, path, strict)
    if problems:
        raise ManifestError(problems)
    return manifest


def _defined_functions(path: Path) -> set[str] | None:
    """Top-level function names of a Python file, read without running it (None if unreadable)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def semantic_problems(manifest: LabManifest, path: Path, strict: bool = True) -> list[Problem]:
    """What the schema cannot see: cross-references between sections and to the lab's files."""
    lab_dir = path.parent
    out: list[Problem] = []

    def add(key: str, expected: str, received: str) -> None:
        out.append(Problem(path, key, expected, received))

    if manifest.lab.id != lab_dir.name:
        add("lab.id", f"the lab folder's name {lab_dir.name!r}", repr(manifest.lab.id))
    if "exact" in manifest.tolerances:
        add("tolerances.exact", "no tolerance named 'exact' (it is built in)", "a definition")

    support = lab_dir / manifest.lab.support
    support_names = _defined_functions(support)
    if support_names is None:
        add("lab.support", f"a readable Python file {support.name} beside the manifest", "none")
        support_names = set()
    for fname in ("solution.py", "starter.py") if strict else ("solution.py",):
        defined = _defined_functions(lab_dir / fname)
        if defined is None:
            add("lab", f"a readable, parseable {fname} beside the manifest", "none")
            continue
        for missing in sorted(set(manifest.functions) - defined):
            add(f"functions.{missing}", f"a function {missing!r} defined in {fname}", "none")
    for fname in ("README.md", "test_lab.py") if strict else ():
        if not (lab_dir / fname).is_file():
            add("lab", f"a {fname} beside the manifest", "none")

    for name, cases in manifest.cases.items():
        if cases.generator not in support_names:
            add(f"cases.{name}.generator", f"a function defined in {manifest.lab.support}", repr(cases.generator))
        if cases.random and not cases.dims:
            add(f"cases.{name}.dims", "ranges to draw random cases from", "none")
        for i, fixed in enumerate(cases.fixed):
            missing = sorted(set(cases.dims) - set(fixed))
            if missing:
                add(f"cases.{name}.fixed[{i}]", f"a value for every dim in dims ({', '.join(missing)} missing)", repr(fixed))
        if not cases.fixed and not cases.random:
            add(f"cases.{name}", "at least one fixed or random case", "none")

    for fname, spec in manifest.functions.items():
        if not manifest.function_points(fname) and not any(c.function == fname for c in manifest.checks.values()):
            add(f"functions.{fname}", "at least one check of this function", "none")
        if spec.points is not None and abs(spec.points - manifest.function_points(fname)) > 1e-9:
            add(
                f"functions.{fname}.points",
                f"the sum of its checks' points ({manifest.function_points(fname):g})",
                f"{spec.points:g}",
            )
        names = [o.name for o in spec.returns]
        if len(set(names)) != len(names):
            add(f"functions.{fname}.returns", "distinct output names", repr(names))

    order = list(manifest.checks)
    for cid, check in manifest.checks.items():
        for i, needed in enumerate(check.after):
            if needed not in manifest.checks or order.index(needed) >= order.index(cid):
                add(f"checks.{cid}.after[{i}]", "the id of a check that comes earlier in the manifest", repr(needed))
        if check.function not in manifest.functions:
            add(f"checks.{cid}.function", f"one of {sorted(manifest.functions)}", repr(check.function))
            continue
        for key, expected, received in check.problems(manifest):
            add(f"checks.{cid}.{key}", expected, received)
    if manifest.max_score <= 0:
        add("checks", "checks worth more than 0 points in all", "0")
    return out
