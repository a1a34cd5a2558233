"""The session's order of grading: what a student may not see yet comes last, in its own worker."""

from __future__ import annotations

import re

from support import LAB01

from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.session import grading_order


def test_hidden_checks_and_what_waits_for_them_come_last(tmp_path) -> None:
    text = (LAB01 / "manifest.toml").read_text()
    text = text.replace("[checks.route-matches-reference]\n", '[checks.route-matches-reference]\nvisibility = "hidden"\n')
    text = text.replace("[checks.permute-bookkeeping]\n", '[checks.permute-bookkeeping]\nvisibility = "after_due_date"\n')
    text = re.sub(r"(\[checks\.expert-mlp-matches-reference\]\n)", r'\1after = ["route-matches-reference"]\n', text)
    lab = tmp_path / LAB01.name
    lab.mkdir()
    for path in LAB01.iterdir():
        if path.is_file():
            (lab / path.name).write_bytes(path.read_bytes())
    (lab / "manifest.toml").write_text(text)
    order = grading_order(load_manifest(lab, default_plugins().checkers()))
    groups = {cid: group for group, cid, _ in order}
    assert [cid for _, cid, _ in order][:2] == ["route-weights-are-a-distribution", "reference-matches-oracle"]
    assert groups["route-matches-reference"] == groups["permute-bookkeeping"] == 1  # hidden, after the due date
    assert groups["expert-mlp-matches-reference"] == 2  # visible, but it waits for a hidden one: a worker of its own
    assert [g for g, _, _ in order] == sorted(g for g, _, _ in order)
