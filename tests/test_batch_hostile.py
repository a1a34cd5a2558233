"""Class folders written to break a batch: each problem is recorded for that student (or the
folder) and the rest of the class is graded, with a valid summary and exit 0, 1 or 2."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import LAB01, ROOT, tight_limits

from grader.batch.layouts import safe_name
from grader.batch.store import Store
from grader.discovery import read_submission
from grader.errors import UsageError
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.seeds import Seeds

SOLUTION = (LAB01 / "solution.py").read_text()


@pytest.fixture
def lab(make_lab) -> Path:
    return make_lab(edit=tight_limits)


def batch(run_cli, folder: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("batch", folder, "-e", "lab-01", "--out", out, "--jobs", "2", "--allow-unsandboxed", *extra)


def gradebook(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as fh:
        return {row["student"]: row for row in csv.DictReader(fh)}


def test_a_helper_file_too_deep_to_parse_costs_nobody_anything(lab, run_cli, tmp_path: Path) -> None:
    folder = tmp_path / "class"
    (folder / "ada").mkdir(parents=True)
    (folder / "ada" / "moe.py").write_text(SOLUTION)
    (folder / "ada" / "generated.py").write_text("x = " + "(" * 100000 + ")" * 100000 + "\n")
    (folder / "ben.py").write_text(SOLUTION)
    code, _, err = batch(run_cli, folder, tmp_path / "out")
    assert code == 0, err
    assert {s: row["percent"] for s, row in gradebook(tmp_path / "out").items()} == {"ada": "100.0", "ben": "100.0"}


def test_a_file_swapped_for_a_link_after_discovery_is_refused_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "class"
    (root / "ada").mkdir(parents=True)
    (root / "ada" / "moe.py").write_text(SOLUTION)
    secret = tmp_path / "solution.py"
    secret.write_text("SECRET = 1\n")
    assert read_submission(root / "ada" / "moe.py", root).data == SOLUTION.encode()
    (root / "ada" / "moe.py").unlink()
    (root / "ada" / "moe.py").symlink_to(secret)  # the file itself becomes a link
    with pytest.raises(UsageError, match="symbolic link"):
        read_submission(root / "ada" / "moe.py", root)
    shutil.rmtree(root / "ada")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "moe.py").write_text("SECRET = 2\n")
    (root / "ada").symlink_to(tmp_path / "elsewhere")  # a folder above it becomes a link
    with pytest.raises(UsageError, match="symbolic link"):
        read_submission(root / "ada" / "moe.py", root)


def test_a_result_left_beside_an_older_record_is_never_reused(lab, run_cli, tmp_path: Path) -> None:
    """Graded with content A, regraded with B but killed between B's reports and B's record,
    then reverted to A: B's result.json must not pass for A's grade."""
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    (folder / "ada.py").write_text(SOLUTION)
    assert batch(run_cli, folder, out)[0] == 0
    stale = json.loads((out / "ada" / "result.json").read_text())
    stale.update(score=0.0, submission_sha256="b" * 64)  # what B's grading wrote before the kill
    (out / "ada" / "result.json").write_text(json.dumps(stale))
    manifest = load_manifest(lab, default_plugins().checkers())
    store = Store(out, manifest, Seeds.from_env())
    try:
        digest = read_submission(folder / "ada.py").sha256
        assert store.stored("ada", digest) is None
        assert "from another grading" in store.why_not("ada", digest)
    finally:
        store.close()
    code, _, _ = batch(run_cli, folder, out)
    assert code == 0 and gradebook(out)["ada"]["percent"] == "100.0"  # regraded, not reused


def test_hidden_entries_are_listed_and_names_are_readable_and_stable(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    for name in ("Jürgen Müller", "李小龙", "🙂", "ana", "Ana"):
        (folder / name).mkdir()
        (folder / name / "moe.py").write_text(SOLUTION)
    (folder / ".hidden_student").mkdir()
    (folder / ".hidden_student" / "moe.py").write_text(SOLUTION)
    code, _, err = batch(run_cli, folder, out)
    assert code == 0, err
    first = set(gradebook(out))
    assert {"Jürgen_Müller", "李小龙"} <= first
    assert any(s.startswith("student-") for s in first)  # nothing readable left: a hash of the name
    assert any(s.startswith("ana-") for s in first) and any(s.startswith("Ana-") for s in first)
    with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
        assert {row["entry"] for row in csv.DictReader(fh)} == {".hidden_student"}
    (folder / "Zoë").mkdir()  # the roster changes: nobody else's folder may move
    (folder / "Zoë" / "moe.py").write_text(SOLUTION)
    assert batch(run_cli, folder, out)[0] == 0
    assert set(gradebook(out)) == first | {"Zoë"}
    assert safe_name("🙂") == safe_name("🙂") and safe_name("a/b") == "a_b"


def test_ten_thousand_stray_files_keep_the_summary_small(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    (folder / "ada.py").write_text(SOLUTION)
    for i in range(10_000):
        (folder / f"notes-{i}.txt").write_bytes(b"")
    code, _, err = batch(run_cli, folder, out)
    assert code == 0, err
    summary = (out / "summary.md").read_text()
    assert len(summary) < 20_000 and "| is not a Python file (.py) or a notebook (.ipynb) | 10000 |" in summary
    with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == 10_000


def test_every_output_is_readable_by_the_course(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    (folder / "ada.py").write_text(SOLUTION)
    assert batch(run_cli, folder, out)[0] == 0
    for name in ("summary.md", "gradebook.csv", "histogram.png", "skipped.csv", "ada/result.json", "ada/scorecard.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_a_file_for_another_lab_is_skipped_with_the_reason_as_on_every_door(lab, run_cli, tmp_path: Path) -> None:
    """An EXERCISE line that names another lab: the upload holds no submission for this one (as
    for grader submit and the LMS containers); the student is listed, the class graded."""
    folder, out = tmp_path / "class", tmp_path / "out"
    folder.mkdir()
    (folder / "ada.py").write_text(SOLUTION)
    (folder / "ben.py").write_text(SOLUTION.replace('EXERCISE = "lab-01-moe-routing"', 'EXERCISE = "lab-03-tiled-gemm"'))
    code, _, err = batch(run_cli, folder, out)
    assert code == 0, err
    assert set(gradebook(out)) == {"ada"}
    with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
        skipped = {row["entry"]: row["reason"] for row in csv.DictReader(fh)}
    assert skipped["ben.py"].startswith("ben.py declares EXERCISE = 'lab-03-tiled-gemm' but this is lab-01-moe-routing")
    assert "ben.py declares EXERCISE" in (out / "summary.md").read_text()


def test_links_left_out_of_a_students_folder_are_a_loud_warning(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "class", tmp_path / "out"
    (folder / "ada").mkdir(parents=True)
    (folder / "ada" / "moe.py").write_text(SOLUTION)
    (folder / "ada" / "helper.py").symlink_to(LAB01 / "solution.py")
    code, _, err = batch(run_cli, folder, out)
    assert code == 0, err
    assert "WARNING: student ada: helper.py is a symbolic link (skipped)" in err
    assert gradebook(out)["ada"]["percent"] == "100.0"
    assert "helper.py is a symbolic link" in (out / "summary.md").read_text()


def test_killed_gradings_leave_no_private_copies_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.sandbox import client, leases

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("SLURM_TMPDIR", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    # A grading killed mid-way: its process made and locked its copy, then died without removing it.
    code = "from grader.sandbox import client, leases; import os; lease = leases.hold(client.copies_root(), client.COPY_PREFIX); print(lease.path); os._exit(0)"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    stale = Path(dead.stdout.strip())
    (stale / "solution.py").write_text("x = 1\n")
    alive = leases.hold(tmp_path, client.COPY_PREFIX)  # a grading of this process, in progress
    client._sweep_stale_copies.cache_clear()
    client._sweep_stale_copies(client.copies_root())
    assert not stale.exists() and alive.path.is_dir()
    alive.release()


def test_a_full_output_disk_stops_the_batch_with_one_line_and_keeps_what_was_done(lab, run_cli, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(small)]).returncode:
        pytest.skip("needs root to mount a small tmpfs as a full disk")
    try:
        folder = tmp_path / "class"
        folder.mkdir()
        for i in range(12):
            (folder / f"s{i:02d}.py").write_text(SOLUTION)
        code, _, err = batch(run_cli, folder, small / "out")
        assert code == 2, err
        assert "No space left on device" in err and "run the same command again" in err
        assert "Traceback" not in err and len(err.strip().splitlines()[-1]) > 0
        kept = [p for p in (small / "out" / ".state").glob("s*.json")]
        for record in kept:  # every student recorded has every report in place
            student = record.stem
            assert {p.name for p in (small / "out" / student).iterdir()} >= {"result.json", "scorecard.md", "junit.xml"}
    finally:
        subprocess.run(["umount", str(small)])
