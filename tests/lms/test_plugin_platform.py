"""A platform added from outside the package: a distribution that registers one ``LmsFormat`` gets
``grader lms NAME`` (``run`` in its container, ``scores``, an action of its own) with no change to
``grader/``. Run as a real installed plugin (a dist-info folder with a ``grader`` entry point) in
processes of their own, as a course would."""

from __future__ import annotations

import csv
import io
import json
import os
import textwrap
from pathlib import Path

import pytest
from support import LAB01, ROOT, run_grader_process, tight_limits

from grader.sandbox.tiers import probe

PLUGIN = '''
"""CodeGrade, as a course might add it: results in /cg/result.json, a fraction and per-check rows."""
import argparse
import json

from grader.api import Container, LmsFormat, Problem, hookimpl


class CodeGradeFormat(LmsFormat):
    name = "codegrade"
    label = "CodeGrade"
    title = "CodeGrade: grade inside its AutoTest container"
    container = Container("CG_ROOT", "/cg", "student", "output/result.json", 120.0)
    score_header = ("email", "grade")

    def payload(self, result):
        if not result.gradable:
            why = result.error if result.problem is Problem.submission else "the course's problem"
            return {"graded": False, "fraction": 0.0, "why": why}
        possible = sum(c.max_score for c in result.checks if not c.deferred)
        earned = sum(c.score for c in result.checks if not c.deferred)
        rows = [{"id": c.id, "status": c.status.value, "points": c.score} for c in result.checks]
        return {"graded": True, "fraction": earned / possible if possible else 0.0, "checks": rows}

    def error_payload(self, reason):
        return {"graded": False, "fraction": 0.0, "why": "the course's problem"}

    def score_rows(self, student, people, points, feedback, args):
        return [[p.get("email") or student, f"{points * args.scale:g}"] for p in people or [{}]]

    def add_score_arguments(self, parser):
        parser.add_argument("--scale", type=float, default=1.0, help="multiply the points")

    def add_commands(self, actions, lab):
        p = actions.add_parser("points", help="the points graded on upload")
        p.add_argument("--exercise", "-e", required=True)
        p.set_defaults(handler=lambda args: print("\\n".join(self.describe_plan(lab(args.exercise)))) or 0)


@hookimpl
def grader_register_lms_formats():
    return [CodeGradeFormat]
'''


@pytest.fixture
def env(make_lab, tmp_path: Path) -> dict[str, str]:
    make_lab(edit=tight_limits)
    site = tmp_path / "site"
    site.mkdir()
    (site / "codegrade_platform.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "codegrade_platform-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: codegrade-platform\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[grader]\ncodegrade = codegrade_platform\n")
    return dict(os.environ, PYTHONPATH=str(site), GRADER_EXERCISES=os.environ["GRADER_EXERCISES"], NO_COLOR="1")


def test_the_package_does_not_know_the_platform() -> None:
    for path in (ROOT / "grader").rglob("*.py"):
        assert "codegrade" not in path.read_text(encoding="utf-8").lower(), path


def test_a_plugin_adds_a_platform_and_its_subcommand(env: dict[str, str], tmp_path: Path) -> None:
    if probe().mode != "bubblewrap":
        pytest.skip("official grading needs full isolation")
    done = run_grader_process("lms", "--help", cwd=ROOT, env=env)
    assert done.returncode == 0 and "codegrade" in done.stdout and "CodeGrade: grade inside its AutoTest container" in done.stdout

    root = tmp_path / "cg"
    (root / "student").mkdir(parents=True)
    solution = (LAB01 / "solution.py").read_text()
    route = solution[solution.index("def route") : solution.index("def expert_mlp")]
    (root / "student" / "routing_helpers.py").write_text("import numpy as np\n\n\n" + route)
    (root / "student" / "moe.py").write_text(
        solution.replace(route, "").replace("import numpy as np\n", "import numpy as np\n\nfrom routing_helpers import route\n", 1)
    )
    done = run_grader_process("lms", "codegrade", "run", "--exercise", "lab-01", cwd=ROOT, env=dict(env, CG_ROOT=str(root)))
    assert done.returncode == 0, done.stderr
    payload = json.loads((root / "output" / "result.json").read_text())
    assert payload["graded"] is True and payload["fraction"] == 1.0
    assert {c["status"] for c in payload["checks"]} == {"passed"}
    assert "Score: 10 / 10" in done.stdout  # the instructors' log, as on every platform

    empty = tmp_path / "empty"
    (empty / "student").mkdir(parents=True)
    done = run_grader_process("lms", "codegrade", "run", "-e", "lab-01", "--root", str(empty), cwd=ROOT, env=env)
    assert done.returncode == 2  # the base rule: an upload that holds no submission exits 2
    payload = json.loads((empty / "output" / "result.json").read_text())
    assert payload == {"graded": False, "fraction": 0.0, "why": "your upload: no Python file (.py) or notebook (.ipynb) to grade"}

    done = run_grader_process("lms", "codegrade", "points", "-e", "lab-01", cwd=ROOT, env=env)
    assert done.returncode == 0 and "lab-01-moe-routing: 10 of 10 points are graded on upload" in done.stdout


def test_a_plugin_platform_takes_its_score_upload_from_a_batch(env: dict[str, str], tmp_path: Path) -> None:
    folder, out = tmp_path / "class", tmp_path / "graded"
    folder.mkdir()
    (folder / "ada.py").write_text((LAB01 / "solution.py").read_text())
    done = run_grader_process("batch", str(folder), "-e", "lab-01", "--out", str(out), "--allow-unsandboxed", cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    done = run_grader_process("lms", "codegrade", "scores", str(out), "-e", "lab-01", "--scale", "2", cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert list(csv.reader(io.StringIO(done.stdout))) == [["email", "grade"], ["ada", "0"]]  # nothing deferred on a CPU lab
