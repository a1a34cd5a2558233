"""The adversarial corpus: hostile lab-01 submissions, each with the verdict it must get.

Every file in ``corpus/`` states the verdict of each check and the most it may score (see
corpus_checks.py); ``corpus/uploads/`` holds multi-file uploads (lab-05), one folder each, and
``corpus/frozen_by_signals/`` what only the SIGSTOP tiers grade (test_environments.py). Each is graded officially (as an LMS or a batch grades) through the real
sandbox with short time limits and a 1 GiB memory budget; the grading must finish, stay
gradable, and never credit the attack.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sandbox.corpus_checks import CORPUS, POST, SECRET, UPLOADS, expectations, graded_as, hidden, lab_edit, matches, upload
from support import LAB01, PHASE, tight_limits

from grader.discovery import intake, read_submission
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import GradeResult
from grader.sandbox.tiers import probe
from grader.session import Grader, GradingOptions, write_reports


@pytest.fixture(scope="module")
def corpus_grader(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tuple[str, ...]], Grader]:
    """A grader of lab-01 for each set of checks graded as hidden (a file's ``# hidden:``)."""
    if probe().mode != "bubblewrap":
        pytest.skip(f"the corpus needs full isolation; this machine runs '{probe().mode}'")
    graders: dict[tuple[str, ...], Grader] = {}

    def grader(hidden_checks: tuple[str, ...]) -> Grader:
        if hidden_checks not in graders:
            lab_dir = tmp_path_factory.mktemp("corpus-lab") / LAB01.name
            shutil.copytree(LAB01, lab_dir, ignore=shutil.ignore_patterns("__pycache__"))
            manifest_path = lab_dir / "manifest.toml"
            # A 1 GiB budget: what a submission may hold across all its processes (memory_across_processes.py).
            text = lab_edit(tight_limits(manifest_path.read_text()), hidden_checks)
            manifest_path.write_text(text + "\n[lab.worker]\nmemory_mb = 1024\n")
            graders[hidden_checks] = Grader(load_manifest(lab_dir, default_plugins().checkers()), GradingOptions(official=True))
        return graders[hidden_checks]

    old = os.environ.get("GRADER_SECRET_SEED")
    os.environ["GRADER_SECRET_SEED"] = SECRET
    try:
        yield grader
    finally:
        if old is None:
            os.environ.pop("GRADER_SECRET_SEED", None)
        else:
            os.environ["GRADER_SECRET_SEED"] = old


def test_corpus_is_large_enough() -> None:
    assert len(list(CORPUS.glob("*.py"))) >= 30


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.py")), ids=lambda p: p.stem)
def test_hostile_submission_gets_its_verdict(path: Path, corpus_grader: Callable[[tuple[str, ...]], Grader], tmp_path: Path) -> None:
    verdicts, max_score = expectations(path)
    upload = tmp_path / "upload" / graded_as(path)
    upload.parent.mkdir()
    shutil.copyfile(path, upload)
    started = time.monotonic()
    result = corpus_grader(hidden(path)).grade(upload)
    elapsed = time.monotonic() - started
    assert result.gradable, result.error
    for check in result.checks:
        status, fragment = verdicts.get(check.id) or verdicts["*"]
        assert matches(check.status.value, status), f"{check.id}: {check.status.value} ({check.message}), expected {status}"
        assert fragment in check.message, f"{check.id}: {check.message!r} lacks {fragment!r}"
    assert result.score <= max_score, f"scored {result.score}, at most {max_score} allowed"
    assert elapsed < 60, f"grading took {elapsed:.1f} s"
    out = tmp_path / "out"
    write_reports(result, out)  # every report is written, whatever the submission sent back
    assert GradeResult.model_validate_json((out / "result.json").read_text(encoding="utf-8")) == result
    ElementTree.parse(out / "junit.xml")
    assert (out / "scorecard.md").read_text(encoding="utf-8").startswith(f"# {result.exercise}")
    if path.name in POST:
        POST[path.name](result)


@pytest.mark.parametrize("folder", sorted(p for p in UPLOADS.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_hostile_upload_gets_its_verdict(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-file upload: every module the graded file loads from it is the submission's."""
    if probe().mode != "bubblewrap":
        pytest.skip(f"the corpus needs full isolation; this machine runs '{probe().mode}'")
    monkeypatch.setenv("GRADER_SECRET_SEED", SECRET)
    main, lab = upload(folder, tmp_path / "upload", PHASE.parent)
    manifest = load_manifest(lab, default_plugins().checkers())
    file = intake(main.parent, manifest)  # the upload's folder, as every door reads it
    assert file.name == main.name
    result = Grader(manifest, GradingOptions(official=True)).grade(file)
    verdicts, max_score = expectations(main)
    assert result.gradable, result.error
    assert sorted(result.helper_files) == sorted(str(p.relative_to(main.parent)) for p in main.parent.rglob("*.py") if p != main)
    for check in result.checks:
        status, fragment = verdicts.get(check.id) or verdicts["*"]
        assert matches(check.status.value, status), f"{check.id}: {check.status.value} ({check.message}), expected {status}"
        assert fragment in check.message, f"{check.id}: {check.message!r} lacks {fragment!r}"
    assert result.score <= max_score
