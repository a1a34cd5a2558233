"""The submission boundary in every isolation tier this machine offers: what a student sees when
their code hangs, raises, exits, prints junk or answers with the wrong kind of thing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import LAB01, statuses, tight_limits

from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import GradeResult
from grader.sandbox.tiers import probe
from grader.session import Grader

SOLUTION = (LAB01 / "solution.py").read_text()
TIERS = ["bubblewrap", "process"]


@pytest.fixture(scope="module", params=TIERS)
def grader(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Grader:
    try:
        probe.cache_clear()
        launcher = probe(force=request.param)
    except RuntimeError as exc:
        pytest.skip(f"{request.param} cannot start here: {exc}")
    finally:
        probe.cache_clear()
    lab_dir = tmp_path_factory.mktemp("lab") / LAB01.name
    shutil.copytree(LAB01, lab_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (lab_dir / "manifest.toml").write_text(tight_limits((lab_dir / "manifest.toml").read_text()))
    manifest = load_manifest(lab_dir, default_plugins().checkers())
    return Grader(manifest, launcher=launcher)


def grade(grader: Grader, tmp_path: Path, source: str) -> GradeResult:
    path = tmp_path / "attempt.py"
    path.write_text(source)
    return grader.grade(path)


def replace(old: str, new: str) -> str:
    assert old in SOLUTION
    return SOLUTION.replace(old, new)


REFERENCE_BODY = "    topk_ids, topk_weights = route(x, w_gate, k)\n    out = np.zeros_like(x)\n    for t in"


def test_a_hanging_function_costs_only_its_own_checks(grader: Grader, tmp_path: Path) -> None:
    source = replace(REFERENCE_BODY, "    import time\n    time.sleep(60)\n" + REFERENCE_BODY)
    result = grade(grader, tmp_path, source)
    by_id = {c.id: c for c in result.checks}
    assert by_id["reference-matches-oracle"].status.value == "error"
    assert "did not return within 2 s" in by_id["reference-matches-oracle"].message
    assert result.score == 9 and result.gradable


def test_a_crashing_function_costs_only_its_own_checks(grader: Grader, tmp_path: Path) -> None:
    source = replace(REFERENCE_BODY, "    import os\n    os._exit(3)\n" + REFERENCE_BODY)
    result = grade(grader, tmp_path, source)
    message = next(c.message for c in result.checks if c.id == "reference-matches-oracle")
    assert "exited with status 3 during moe_forward_reference" in message
    assert result.score == 9


def test_an_exception_names_the_line(grader: Grader, tmp_path: Path) -> None:
    source = replace("    return np.maximum(x @ w1, 0.0) @ w2", "    raise ValueError('shapes confuse me')")
    message = next(c.message for c in grade(grader, tmp_path, source).checks if c.id == "expert-mlp-matches-reference")
    assert message.startswith("case 1 of ") and ": expert_mlp raised ValueError: shapes confuse me (line " in message
    assert ", in expert_mlp)" in message


def test_exit_at_import(grader: Grader, tmp_path: Path) -> None:
    result = grade(grader, tmp_path, "import sys\nprint('PASSED 10/10')\nsys.exit(0)\n")
    assert set(statuses(result).values()) == {"error"} and result.score == 0
    assert all("importing the submission raised SystemExit: called sys.exit(0)" in c.message for c in result.checks)
    assert "PASSED 10/10" in result.submission_output


def test_syntax_error(grader: Grader, tmp_path: Path) -> None:
    result = grade(grader, tmp_path, "def route(x, w_gate, k)\n    return x\n")
    assert all("SyntaxError" in c.message and "line 1" in c.message for c in result.checks)


def test_missing_function_costs_only_its_checks(grader: Grader, tmp_path: Path) -> None:
    source = replace("def moe_forward_reference(", "def moe_forward_reference_later(")
    result = grade(grader, tmp_path, source)
    message = next(c.message for c in result.checks if c.id == "reference-matches-oracle")
    assert message == "the submission defines no function moe_forward_reference(x, w_gate, w1s, w2s, k)"
    assert result.score == 9


def test_printed_junk_is_ignored(grader: Grader, tmp_path: Path) -> None:
    junk = 'print(\'{"score": 0, "tests": []}\')\nprint("\\x1b[2J FAIL FAIL")\n'
    result = grade(grader, tmp_path, junk + SOLUTION.replace("    return out\n", "    print('junk')\n    return out\n"))
    assert result.score == 10
    assert '{"score": 0' in result.submission_output and "\x1b" not in result.submission_output


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("    return np.maximum(x @ w1, 0.0) @ w2", "    return (np.maximum(x @ w1, 0.0) @ w2).T", "has shape"),
        ("    return np.maximum(x @ w1, 0.0) @ w2", "    return (np.maximum(x @ w1, 0.0) @ w2).astype(bool)", "dtype bool"),
        ("    return np.maximum(x @ w1, 0.0) @ w2", "    return (np.maximum(x @ w1, 0.0) @ w2).tolist()", "should be a numpy array, got a list"),
        ("    return order, offsets", "    return order", "should return a tuple of 2 values"),
    ],
)
def test_wrong_kinds_of_answer_fail_with_a_reason(grader: Grader, tmp_path: Path, old: str, new: str, fragment: str) -> None:
    result = grade(grader, tmp_path, replace(old, new))
    failed = [c for c in result.checks if c.status.value == "failed"]
    assert failed and fragment in failed[0].message, [c.message for c in result.checks]


def test_object_claiming_to_equal_anything(grader: Grader, tmp_path: Path) -> None:
    source = replace(
        "    return np.maximum(x @ w1, 0.0) @ w2",
        "    class Eq:\n        __eq__ = lambda s, o: True\n        __array__ = lambda s, *a, **k: np.zeros((1,))\n    return Eq()",
    )
    check = next(c for c in grade(grader, tmp_path, source).checks if c.id == "expert-mlp-matches-reference")
    assert check.status.value == "failed" and "should be a numpy array, got a Eq" in check.message
