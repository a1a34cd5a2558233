"""Manifests: valid ones load, invalid ones report every problem with file, key, expected, received."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grader.errors import ManifestError
from grader.manifest import json_schema, load_manifest
from grader.plugins import default as default_plugins

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "manifest.schema.json"


def load(path: Path):
    return load_manifest(path, default_plugins().checkers(), strict=True)


def problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load(path)
    return [str(p) for p in info.value.problems]


def test_grading_needs_only_what_grading_uses(make_lab) -> None:
    lab = make_lab()
    (lab / "README.md").unlink()
    (lab / "test_lab.py").unlink()
    assert load_manifest(lab, default_plugins().checkers()).id == "lab-01-moe-routing"
    found = problems(lab)
    assert any("expected a README.md beside the manifest" in p for p in found)
    assert any("expected a test_lab.py beside the manifest" in p for p in found)


def test_every_shipped_manifest_is_valid(lab01: Path) -> None:
    for manifest in sorted(lab01.parent.glob("lab-*/manifest.toml")):
        m = load(manifest)
        assert m.id == manifest.parent.name
        assert m.max_score > 0


def test_lab01_points_and_functions(lab01: Path) -> None:
    m = load(lab01)
    assert m.max_score == 10
    assert list(m.functions) == ["route", "expert_mlp", "permute", "moe_forward_reference", "moe_forward_grouped"]
    assert m.function_points("moe_forward_grouped") == 3


def test_all_errors_reported_at_once_with_key_expected_received(make_lab) -> None:
    def edit(text: str) -> str:
        text = text.replace("rtol = 1e-4", 'rtol = "tight"')
        text = text.replace('kind = "conservation"', 'kind = "conservatoin"', 1)
        text = text.replace("min_speedup = 4.0", "min_speedup = 4.0\nspeed = 3")
        return text

    lab = make_lab(edit=edit)
    found = problems(lab)
    manifest = lab / "manifest.toml"
    assert any(
        line.startswith(f"{manifest}: tolerances.default.rtol: expected a number, received 'tight'") for line in found
    ), found
    assert any(
        "checks.permute-bookkeeping.kind: expected kind to be one of" in line
        and line.endswith("received 'conservatoin'")
        for line in found
    ), found
    assert any("checks.grouped-is-faster.speed: expected no such key, received 3" in line for line in found), found
    assert len(found) == 3


def test_cross_references_are_checked(make_lab) -> None:
    def edit(text: str) -> str:
        text = text.replace('cases = "route"\nunordered_rows_by', 'cases = "routes"\nunordered_rows_by', 1)
        text = text.replace('function = "permute"', 'function = "permutate"', 1)
        text = text.replace("points = 3\nsummary = \"top-k", "points = 4\nsummary = \"top-k", 1)
        text = text.replace('generator = "route_inputs"', 'generator = "no_such_generator"')
        return text

    found = problems(make_lab(edit=edit))
    text = "\n".join(found)
    assert "checks.route-matches-reference.cases: expected one of" in text and "received 'routes'" in text
    assert "checks.permute-bookkeeping.function: expected one of" in text and "received 'permutate'" in text
    assert "functions.route.points: expected the sum of its checks' points (3), received 4" in text
    assert "cases.route.generator: expected a function defined in lab.py, received 'no_such_generator'" in text
    assert "functions.permute: expected at least one check of this function, received none" in text


def test_toml_syntax_error_is_one_problem(make_lab) -> None:
    lab = make_lab(edit=lambda t: t + "\n[checks.broken\n")
    found = problems(lab)
    assert len(found) == 1 and "expected valid TOML" in found[0]


def test_missing_manifest_file(tmp_path: Path) -> None:
    found = problems(tmp_path / "nowhere" / "manifest.toml")
    assert found == [f"{tmp_path / 'nowhere' / 'manifest.toml'}: (top level): expected a manifest file, received no such file"]


def test_solution_must_define_every_function(make_lab, lab01: Path) -> None:
    source = (lab01 / "solution.py").read_text().replace("def permute(", "def permute_later(")
    found = problems(make_lab(files={"solution.py": source}))
    assert any("functions.permute: expected a function 'permute' defined in solution.py" in p for p in found)


def test_lab_id_must_match_folder(make_lab) -> None:
    found = problems(make_lab(edit=lambda t: t.replace('id = "lab-01-moe-routing"', 'id = "lab-09-other"')))
    assert any("lab.id: expected the lab folder's name 'lab-01-moe-routing', received 'lab-09-other'" in p for p in found)


def test_bad_dimension_expression(make_lab) -> None:
    found = problems(make_lab(edit=lambda t: t.replace('shape = ["T*k"]', 'shape = ["T**k"]')))
    assert any("functions.permute.returns[0].shape" in p and "dimension expressions" in p for p in found), found


def test_schema_is_generated_and_committed() -> None:
    schema = json_schema(default_plugins().checkers())
    for kind in ("oracle", "conservation", "property", "cpu-speedup"):
        assert f'"{kind}"' in json.dumps(schema["properties"]["checks"])
    assert json.loads(SCHEMA.read_text()) == schema, "docs/manifest.schema.json is stale: run grader validate --schema"


def test_every_field_is_documented() -> None:
    schema = json_schema(default_plugins().checkers())
    undocumented = []
    for name, definition in schema.get("$defs", {}).items():
        for field, spec in definition.get("properties", {}).items():
            if "description" not in spec and field not in ("kind", "rule"):
                undocumented.append(f"{name}.{field}")
    assert not undocumented, undocumented

