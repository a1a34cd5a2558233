"""Plugins: the contract is documented, built-ins use it, third-party checkers load and grade."""

from __future__ import annotations

import inspect
import json
import os
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from support import LAB01, ROOT, run_grader_process

from grader import hookimpl, hookspecs, plugins
from grader.checkers.oracle import OracleChecker
from grader.plugins import PluginError

HOOKS = [
    obj for name, obj in vars(hookspecs).items() if name.startswith("grader_") and inspect.isfunction(obj)
]

PLUGIN_SOURCE = '''
"""An example third-party checker: a function must give the same answer twice on the same inputs."""
from typing import Literal

import numpy as np
from pydantic import Field

from grader.api import Checker, CheckSpec, Verdict, hookimpl


class DeterministicOptions(CheckSpec):
    kind: Literal["deterministic"] = "deterministic"
    cases: str = Field(description="The case set to run twice.")


class DeterministicChecker(Checker):
    name = "deterministic"
    Options = DeterministicOptions

    def run(self, check_id, check, ctx):
        for case in ctx.cases(check.cases, check_id):
            first = ctx.call(check.function, case).values
            second = ctx.call(check.function, case).values
            for name in first:
                if not np.array_equal(first[name], second[name]):
                    return Verdict.failed(f"{case.label}: {name} changed between two identical calls")
        return Verdict.passed("same answers twice")


@hookimpl
def grader_register_checkers():
    return [DeterministicChecker]
'''


def test_every_hook_is_documented() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert HOOKS
    for hook in HOOKS:
        doc = inspect.getdoc(hook) or ""
        assert doc, f"{hook.__name__} has no docstring"
        assert "Fires" in doc, f"{hook.__name__} does not say when it fires"
        for param in inspect.signature(hook).parameters:
            assert f":param {param}:" in doc, f"{hook.__name__} does not document {param}"
        if hook.__name__.startswith("grader_register_"):
            assert ":return:" in doc
        assert f"`{hook.__name__}(" in docs, f"docs/plugins.md does not document {hook.__name__}"


def test_builtins_register_through_the_hooks() -> None:
    registry = plugins.build(autoload=False)
    assert set(registry.checker_classes) >= {"oracle", "conservation", "property", "cpu-speedup"}
    assert set(registry.reporter_classes) >= {"json", "markdown", "junit", "terminal"}
    names = [registry.pm.get_name(p) for p in registry.pm.get_plugins()]
    assert set(plugins.BUILTIN_PLUGINS) <= set(names)


def test_duplicate_checker_name_is_an_error() -> None:
    class Impostor(OracleChecker):
        pass

    module = ModuleType("impostor_plugin")
    module.grader_register_checkers = hookimpl(lambda: [Impostor])  # type: ignore[attr-defined]
    registry = plugins.build(autoload=False, extra=[module])
    with pytest.raises(PluginError, match="checker name 'oracle' is registered by both"):
        _ = registry.checker_classes


def test_misspelled_hook_is_rejected() -> None:
    module = ModuleType("typo_plugin")
    module.grader_register_checker = hookimpl(lambda: [])  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="unknown hook"):
        plugins.build(autoload=False, extra=[module])


def _install_plugin(site: Path) -> None:
    """A real installed distribution (a dist-info folder on sys.path) with a grader entry point."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "example_grader_plugin.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    info = site / "example_grader_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: example-grader-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[grader]\nexample = example_grader_plugin\n")


def _lab_with_deterministic_check(make_lab) -> Path:
    check = textwrap.dedent(
        """
        [checks.expert-mlp-is-deterministic]
        kind = "deterministic"
        title = "expert_mlp gives the same answer twice"
        function = "expert_mlp"
        points = 1
        cases = "expert_mlp"
        """
    )
    return make_lab(edit=lambda text: text.replace('points = 1\nsummary = "relu', 'points = 2\nsummary = "relu') + check)


def test_entry_point_checker_grades(make_lab, tmp_path: Path) -> None:
    lab = _lab_with_deterministic_check(make_lab)
    site = tmp_path / "site"
    _install_plugin(site)
    flaky = (LAB01 / "solution.py").read_text().replace(
        "    return np.maximum(x @ w1, 0.0) @ w2",
        "    return np.maximum(x @ w1, 0.0) @ w2 + np.random.default_rng().random() * 1e-3",
    )
    (tmp_path / "flaky.py").write_text(flaky)
    env = dict(os.environ, PYTHONPATH=str(site), GRADER_EXERCISES=os.environ["GRADER_EXERCISES"])
    for name, want in [(LAB01 / "solution.py", "passed"), (tmp_path / "flaky.py", "failed")]:
        out = tmp_path / f"out-{Path(name).stem}"
        done = run_grader_process("submit", str(name), "--exercise", "lab-01", "--out", str(out), cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr
        result = json.loads((out / "result.json").read_text())
        check = next(c for c in result["checks"] if c["id"] == "expert-mlp-is-deterministic")
        assert check["status"] == want, check
        assert result["max_score"] == 11
        assert result["environment"]["plugins"] == {"example": "example-grader-plugin 0.1"}
    assert "changed between two identical calls" in check["message"]
    del lab


def test_manifest_with_unknown_plugin_kind_is_invalid_without_it(make_lab, run_cli) -> None:
    lab = _lab_with_deterministic_check(make_lab)
    code, _, err = run_cli("validate", lab)
    assert code == 2
    assert "checks.expert-mlp-is-deterministic.kind: expected kind to be one of" in err
    assert "received 'deterministic'" in err


def test_autoload_can_be_switched_off(make_lab, tmp_path: Path) -> None:
    lab = _lab_with_deterministic_check(make_lab)
    site = tmp_path / "site"
    _install_plugin(site)
    env = dict(os.environ, PYTHONPATH=str(site), GRADER_DISABLE_PLUGIN_AUTOLOAD="1")
    done = run_grader_process("validate", str(lab), cwd=ROOT, env=env)
    assert done.returncode == 2 and "received 'deterministic'" in done.stderr
