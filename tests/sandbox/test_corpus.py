"""The adversarial corpus: hostile lab-01 submissions, each with the verdict it must get.

Every file in ``corpus/`` states the verdict of each check and the most it may score (see
corpus_checks.py). Each is graded officially (as an LMS or a batch grades) through the real
sandbox with short time limits and a 1 GiB memory budget; the grading must finish, stay
gradable, and never credit the attack.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sandbox.corpus_checks import CORPUS, POST, SECRET, expectations
from support import LAB01, tight_limits

from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import GradeResult
from grader.sandbox.tiers import probe
from grader.session import Grader, GradingOptions, write_reports


@pytest.fixture(scope="module")
def corpus_grader(tmp_path_factory: pytest.TempPathFactory) -> Grader:
    if probe().mode != "bubblewrap":
        pytest.skip(f"the corpus needs full isolation; this machine runs '{probe().mode}'")
    root = tmp_path_factory.mktemp("corpus-lab")
    lab_dir = root / LAB01.name
    shutil.copytree(LAB01, lab_dir, ignore=shutil.ignore_patterns("__pycache__"))
    manifest_path = lab_dir / "manifest.toml"
    # A 1 GiB budget: what a submission may hold across all its processes (memory_across_processes.py).
    manifest_path.write_text(tight_limits(manifest_path.read_text()) + "\n[lab.worker]\nmemory_mb = 1024\n")
    manifest = load_manifest(lab_dir, default_plugins().checkers())
    old = os.environ.get("GRADER_SECRET_SEED")
    os.environ["GRADER_SECRET_SEED"] = SECRET
    try:
        yield Grader(manifest, GradingOptions(official=True))
    finally:
        if old is None:
            os.environ.pop("GRADER_SECRET_SEED", None)
        else:
            os.environ["GRADER_SECRET_SEED"] = old


def test_corpus_is_large_enough() -> None:
    assert len(list(CORPUS.glob("*.py"))) >= 30


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.py")), ids=lambda p: p.stem)
def test_hostile_submission_gets_its_verdict(path: Path, corpus_grader: Grader, tmp_path: Path) -> None:
    verdicts, max_score = expectations(path)
    started = time.monotonic()
    result = corpus_grader.grade(path)
    elapsed = time.monotonic() - started
    assert result.gradable, result.error
    for check in result.checks:
        status, fragment = verdicts.get(check.id) or verdicts["*"]
        assert check.status.value == status, f"{check.id}: {check.status.value} ({check.message}), expected {status}"
        assert fragment in check.message, f"{check.id}: {check.message!r} lacks {fragment!r}"
    assert result.score <= max_score, f"scored {result.score}, at most {max_score} allowed"
    assert elapsed < 60, f"grading took {elapsed:.1f} s"
    write_reports(result, tmp_path)  # every report is written, whatever the submission sent back
    assert GradeResult.model_validate_json((tmp_path / "result.json").read_text(encoding="utf-8")) == result
    ElementTree.parse(tmp_path / "junit.xml")
    assert (tmp_path / "scorecard.md").read_text(encoding="utf-8").startswith(f"# {result.exercise}")
    if path.name in POST:
        POST[path.name](result)
