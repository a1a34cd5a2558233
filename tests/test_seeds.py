"""Seeds: local runs are reproducible; a secret part defeats outputs hard-coded for public seeds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from support import LAB01

from grader.lab import Lab
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.seeds import Seeds
from grader.session import Grader, GradingOptions

CHEAT = '''
import hashlib, json
import numpy as np

ANSWERS = json.loads({table!r})


def route(x, w_gate, k):
    ids, weights = ANSWERS[hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()]
    return np.array(ids, dtype=np.int64).reshape(x.shape[0], k), np.array(weights).reshape(x.shape[0], k)
'''


def test_same_seed_same_inputs_and_different_seed_different_inputs() -> None:
    assert np.array_equal(Seeds(5).rng("a", 1).random(4), Seeds(5).rng("a", 1).random(4))
    assert not np.array_equal(Seeds(5).rng("a", 1).random(4), Seeds(6).rng("a", 1).random(4))
    assert not np.array_equal(Seeds(5).rng("a", 1).random(4), Seeds(5, "s").rng("a", 1).random(4))


def test_secret_seed_defeats_hard_coded_public_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = load_manifest(LAB01, default_plugins().checkers())
    lab = Lab(manifest)
    public = Seeds(123)
    table = {}
    for case in lab.cases("route", public, "route-matches-reference"):
        out = lab.call_solution("route", case.inputs)
        key = hashlib.sha256(np.ascontiguousarray(case.inputs["x"]).tobytes()).hexdigest()
        table[key] = [out["topk_ids"].tolist(), out["topk_weights"].tolist()]
    cheat = tmp_path / "cheat.py"
    cheat.write_text(CHEAT.format(table=json.dumps(table)))

    def route_statuses(seeds: Seeds) -> set[str]:
        result = Grader(manifest, GradingOptions(seed=seeds.public)).grade(cheat)
        return {c.status.value for c in result.checks if c.id == "route-matches-reference"}

    assert route_statuses(Seeds.from_env(123)) == {"passed"}  # the cheat works against the public seed...
    monkeypatch.setenv("GRADER_SECRET_SEED", "only-the-course-staff-know")
    assert route_statuses(Seeds.from_env(123)) == {"error"}  # ...and not once a secret is mixed in


# --- the secret by file (a batch system stores job scripts and their environment) -----------------


def test_secret_seed_file_gives_the_same_seeds_as_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("course-secret\n")
    secret.chmod(0o600)
    monkeypatch.delenv("GRADER_SECRET_SEED", raising=False)
    monkeypatch.setenv("GRADER_SECRET_SEED_FILE", str(secret))
    by_file = Seeds.from_env()
    assert by_file.official and by_file.key == Seeds(secret="course-secret").key
    monkeypatch.setenv("GRADER_SECRET_SEED", "the-variable-wins")
    assert Seeds.from_env().key == Seeds(secret="the-variable-wins").key


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: (p.write_text("s"), p.chmod(0o644)), "others may read it (mode 0644); chmod 600 it"),
        (lambda p: (p.write_text("s"), p.chmod(0o640)), "others may read it (mode 0640); chmod 600 it"),
        (lambda p: (p.write_text("\n"), p.chmod(0o600)), "the secret seed file is empty"),
        (lambda p: None, "cannot read the secret seed file (No such file or directory)"),
        (lambda p: p.mkdir(mode=0o700), "not a regular file"),
    ],
    ids=["world-readable", "group-readable", "empty", "missing", "folder"],
)
def test_a_bad_secret_seed_file_is_one_line_and_exit_2(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup, message: str) -> None:
    path = tmp_path / "secret"
    setup(path)
    monkeypatch.delenv("GRADER_SECRET_SEED", raising=False)
    monkeypatch.setenv("GRADER_SECRET_SEED_FILE", str(path))
    code, _, err = run_cli("submit", LAB01 / "solution.py", "--out", tmp_path / "out", "--official")
    assert code == 2, err
    assert f"GRADER_SECRET_SEED_FILE={path}: {message}" in err and len(err.strip().splitlines()) == 1
