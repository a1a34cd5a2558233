"""Every lab proves its checkers: solution and accepted files full marks, starter 0, wrong files
fail what they name, and every check is failed by some wrong file."""

from __future__ import annotations

import io

import pytest

from grader import discovery
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.selftest import run_selftest
from grader.session import GradingOptions

LABS = discovery.find_labs()


def test_labs_are_found() -> None:
    assert "lab-01-moe-routing" in LABS


@pytest.mark.parametrize("lab_id", sorted(LABS))
def test_selftest(lab_id: str) -> None:
    out = io.StringIO()
    manifest = load_manifest(LABS[lab_id], default_plugins().checkers())
    ok = run_selftest(manifest, GradingOptions(), default_plugins(), out)
    assert ok, out.getvalue()
    text = out.getvalue()
    assert "FAIL" not in text
    assert "every check is failed by at least one wrong file" in text
