"""``grader batch`` as a TA meets it: layouts, reports, resume, failures that stay contained.

Gradings run through the real batch workers and sandbox on a copy of lab-01 with short time
limits and without its timing check (a measured speed is not deterministic, and these tests
compare results across runs).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from support import LAB01, ROOT, tight_limits, wrong_file

from grader.batch.layouts import Entry, find_submissions
from grader.batch.progress import Progress
from grader.batch.shard import Shard, shard_of
from grader.batch.store import Store
from grader.batch.summary import gradebook_csv, summary_md
from grader.discovery import read_submission, source_file
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.results import Environment, GradeResult, SandboxInfo
from grader.seeds import Seeds
from grader.session import GradingOptions

SOLUTION = LAB01 / "solution.py"
WRONG = LAB01 / "wrong"
CORPUS = ROOT / "tests" / "sandbox" / "corpus"
FULL = 9.5  # lab-01's 10 points without the 0.5-point timing check


def without_timing(text: str) -> str:
    """A manifest edit: drop the 0.5-point timing check (and its points from the function's total)."""
    text = re.sub(r"\n\[checks\.grouped-is-faster\]\n(?:(?!\n\[).)*", "\n", text, flags=re.S)
    return re.sub(r"(\[functions\.moe_forward_grouped\]\n(?:[^\[].*\n)*?points = )3\b", r"\g<1>2.5", text)


@pytest.fixture
def lab(make_lab) -> Path:
    return make_lab(edit=lambda text: without_timing(tight_limits(text)))


def put(folder: Path, name: str, source: Path | str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source.read_text() if isinstance(source, Path) else source)
    return path


def skipped_entries(out: Path) -> dict[str, str]:
    """skipped.csv: every entry that was not graded, and why."""
    with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
        return {row["entry"]: row["reason"] for row in csv.DictReader(fh)}


def batch(run_cli, folder: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("batch", folder, "--exercise", "lab-01", "--out", out, "--jobs", "2", "--allow-unsandboxed", *extra)


def result(out: Path, student: str) -> dict:
    return json.loads((out / student / "result.json").read_text())


def gradebook(out: Path) -> dict[str, dict[str, str]]:
    return {row["student"]: row for row in csv.DictReader(io.StringIO((out / "gradebook.csv").read_text()))}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its structure (chunks, CRCs, pixel data)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append(kind)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (depth, color) == (8, 2)
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


# --- layouts -------------------------------------------------------------------------------------


def test_plain_files_reports_summary_gradebook_and_histogram(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "subs", tmp_path / "out"
    put(folder, "ada.py", SOLUTION)
    put(folder, "ben.py", wrong_file("smallest_logits"))
    (folder / "sneaky.py").symlink_to(SOLUTION)
    os.mkfifo(folder / "pipe.py")
    put(folder, "notes.txt", "not code")

    code, out_text, err = batch(run_cli, folder, out, "--fail-under", "60")

    assert code == 1, err  # ben is under 60%
    assert "2 students, 2 graded now" in out_text
    for student in ("ada", "ben"):
        assert {p.name for p in (out / student).iterdir()} >= {"result.json", "scorecard.md", "junit.xml"}
    assert result(out, "ada")["score"] == FULL and result(out, "ada")["gradable"] is True
    ben = result(out, "ben")
    assert ben["score"] < FULL
    assert next(c for c in ben["checks"] if c["id"] == "route-matches-reference")["status"] == "failed"
    assert "<testsuite" in (out / "ben" / "junit.xml").read_text()
    assert not (out / "sneaky").exists() and not (out / "pipe").exists()

    book = gradebook(out)
    assert set(book) == {"ada", "ben"}
    assert list(next(iter(book.values())))[:6] == ["student", "file", "score", "max_score", "percent", "gradable"]
    assert book["ada"]["percent"] == "100.0" and book["ada"]["route-matches-reference"] == "2"
    assert book["ben"]["route-matches-reference"] == "0" and book["ben"]["gradable"] == "yes"

    summary = (out / "summary.md").read_text()
    assert "2 submissions · 2 graded · 3 entries skipped" in summary
    assert "| `route-matches-reference` | 2 | 1 | 50% | 1 | 0 | 0 |" in summary
    assert "### `route-matches-reference`: 1 of 2 did not pass" in summary
    listed = skipped_entries(out)
    assert listed["sneaky.py"].startswith("is a symbolic link") and listed["pipe.py"] == "is not a regular file"
    assert listed["notes.txt"] == "is not a Python file (.py) or a notebook (.ipynb)"
    assert "| is not a regular file | 1 | `pipe.py` |" in summary  # grouped by reason in summary.md
    assert png_size((out / "histogram.png").read_bytes()) == (640, 360)


def test_the_histogram_has_a_title_and_names_both_axes() -> None:
    from grader.batch import histogram

    def ink(img) -> "np.ndarray":
        return (img != 255).any(axis=-1)

    def alone(draw) -> "np.ndarray":
        blank = np.full((histogram.HEIGHT, histogram.WIDTH, 3), 255, dtype=np.uint8)
        draw(blank)
        return ink(blank)

    import numpy as np

    img = ink(histogram.render([12.0, 55.0, 100.0], "lab-01-moe-routing: scores"))
    title = alone(lambda b: histogram._text(b, histogram.LEFT, 8, "lab-01-moe-routing: scores"))
    x_label = alone(lambda b: histogram._text(b, (histogram.LEFT + histogram.WIDTH - histogram.RIGHT) // 2, histogram.HEIGHT - histogram.BOTTOM + 26, "score (percent of the points)", center=True))
    y_label = alone(lambda b: histogram._vertical_text(b, 6, 178, "students"))
    for label in (title, x_label, y_label):
        assert label.sum() > 100 and (img[label]).all()  # every pixel of the words is drawn
    untitled = ink(histogram.render([12.0, 55.0, 100.0]))
    assert not untitled[title].any()


def _folders(folder: Path) -> dict[str, float]:
    put(folder, "ada/lab01/helper.py", "def helper():\n    return 1\n")
    put(folder, "ada/lab01/mine.py", SOLUTION)  # names the lab in an EXERCISE line
    put(folder, "ben/deep/er/ben_solution.py", wrong_file("offsets_off_by_one"))
    put(folder, "cleo/a.py", "x = 1\n")
    put(folder, "cleo/b.py", "y = 2\n")
    (folder / "dan").mkdir()
    (folder / "dan" / "solution.py").symlink_to(SOLUTION)
    return {"ada": FULL, "ben": FULL - 2 - 1.5 - 1}


def _gradescope(folder: Path) -> dict[str, float]:
    put(
        folder,
        "submission_metadata.yml",
        textwrap.dedent(
            """\
            submission_111:
              :submitters:
              - :name: Ada Lovelace
                :sid: '100'
                :email: ada@example.edu
              :created_at: 2026-03-01 10:00:00.000000000 -08:00
              :score: 10.0
            submission_222:
              :submitters:
                - :name: Grace Hopper
                  :email: grace@example.edu
                - :name: Alan Turing
              :score: 5.0
            submission_333:
              :submitters:
              - :name: No Folder
            """
        ),
    )
    put(folder, "submission_111/starter.py", SOLUTION)
    put(folder, "submission_222/src/starter.py", wrong_file("mlp_without_relu"))
    return {"Ada_Lovelace": FULL, "Grace_Hopper_+_Alan_Turing": FULL - 1 - 1 - 1.5 - 1}


def _notebook(source: str) -> str:
    import nbformat

    cells = [nbformat.v4.new_markdown_cell("My lab"), nbformat.v4.new_code_cell(source)]
    return nbformat.writes(nbformat.v4.new_notebook(cells=cells))


def _canvas(folder: Path) -> dict[str, float]:
    put(folder, "lovelace_ada_12345_67890_starter.py", SOLUTION)
    put(folder, "hopper_grace_late_111_222_starter-1.py", wrong_file("smallest_logits"))
    put(folder, "turingalan_LATE_201936_8812400_moe_lab.ipynb", _notebook(SOLUTION.read_text()))
    put(folder, "notes.ipynb", _notebook(SOLUTION.read_text()))  # not Canvas-style: a student of its own
    return {"lovelace_ada": FULL, "hopper_grace": FULL - 2 - 1 - 1.5 - 1, "turingalan": FULL, "notes": FULL}


def test_canvas_names_are_read_file_by_file_in_a_mixed_folder(lab: Path, tmp_path: Path) -> None:
    """A stray file among a Canvas export (the TA's notes, a re-upload by hand) names only itself."""
    for name in (
        "smithjohn_212345_9876543_starter.py",
        "garcia-lopezmaria_LATE_212346_9876544_moe_routing-2.py",
        "nguyenthi_212347_9876545_lab01.ipynb",
        "obrien_late_212348_9876546_starter.py",
        "stray_upload.py",
        "README.txt",
    ):
        put(tmp_path / "class", name, SOLUTION.read_text() if not name.endswith(".ipynb") else _notebook(SOLUTION.read_text()))
    manifest = load_manifest(lab, default_plugins().checkers())
    entries, skipped = find_submissions(tmp_path / "class", manifest)
    assert {e.student: e.layout for e in entries} == {
        "smithjohn": "canvas", "garcia-lopezmaria": "canvas", "nguyenthi": "canvas", "obrien": "canvas",
        "stray_upload": "file",
    }  # fmt: skip
    assert [s.name for s in skipped] == ["README.txt"]


@pytest.mark.parametrize("layout", [_folders, _gradescope, _canvas], ids=["folders", "gradescope", "canvas"])
def test_accepted_layouts(lab, run_cli, tmp_path: Path, layout, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "subs", tmp_path / "out"
    folder.mkdir()
    expected = layout(folder)
    monkeypatch.delenv("GRADER_SECRET_SEED", raising=False)
    monkeypatch.delenv("GRADER_SECRET_SEED_FILE", raising=False)

    code, _, err = batch(run_cli, folder, out)

    assert code == 0, err
    # grading on the public seed is said on the terminal, as grader slurm says it, not only in summary.md
    assert "grader batch: warning: GRADER_SECRET_SEED is not set: inputs come from the public seed only" in err
    assert {s: result(out, s)["score"] for s in expected} == expected
    assert set(gradebook(out)) == set(expected)
    summary = (out / "summary.md").read_text()
    if layout is _folders:
        assert gradebook(out)["ada"]["file"] == "ada/lab01/mine.py"
        listed = skipped_entries(out)
        assert listed["cleo"].startswith("2 Python files and none is clearly the lab-01-moe-routing submission")
        assert listed["dan"] == "no Python file (.py) or notebook (.ipynb) to grade (solution.py is a symbolic link (skipped))"
        assert "`cleo`" in summary and "`dan`" in summary
    if layout is _gradescope:
        assert gradebook(out)["Ada_Lovelace"]["file"] == "submission_111/starter.py"
        assert skipped_entries(out)["submission_333"] == "named in submission_metadata.yml (No Folder) but has no folder"
        assert "`submission_333`" in summary


# --- resume -------------------------------------------------------------------------------------


def test_rerun_skips_graded_and_force_redoes_them(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "subs", tmp_path / "out"
    put(folder, "ada.py", SOLUTION)
    ben = put(folder, "ben.py", wrong_file("smallest_logits"))
    assert batch(run_cli, folder, out)[0] == 0
    stamp = {s: (out / s / "result.json").stat().st_mtime_ns for s in ("ada", "ben")}

    code, out_text, err = batch(run_cli, folder, out)
    assert code == 0
    assert "2 already graded (skipped; --force redoes them)" in err
    assert "0 graded now" in out_text
    assert {s: (out / s / "result.json").stat().st_mtime_ns for s in stamp} == stamp
    assert set(gradebook(out)) == {"ada", "ben"}  # the class outputs still cover everyone

    ben.write_text(SOLUTION.read_text())  # a new upload: only that student is graded again
    code, _, err = batch(run_cli, folder, out)
    assert "1 already graded" in err and "grading 1 with 1 worker" in err
    assert result(out, "ben")["score"] == FULL
    assert (out / "ada" / "result.json").stat().st_mtime_ns == stamp["ada"]

    code, _, err = batch(run_cli, folder, out, "--force")
    assert code == 0 and "grading 2 with 2 worker" in err
    assert (out / "ada" / "result.json").stat().st_mtime_ns != stamp["ada"]


def test_one_batch_at_a_time_per_output_folder(lab, tmp_path: Path) -> None:
    manifest = load_manifest(lab, default_plugins().checkers())
    first = Store(tmp_path / "out", manifest, Seeds())
    with pytest.raises(Exception, match="another grader batch is writing there"):
        Store(tmp_path / "out", manifest, Seeds())
    first.close()
    Store(tmp_path / "out", manifest, Seeds()).close()


# --- failures stay with their submission ---------------------------------------------------------


def test_hanging_and_crashing_submissions_cost_only_themselves(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "subs", tmp_path / "out"
    put(folder, "good.py", SOLUTION)
    put(folder, "loops.py", CORPUS / "infinite_loop_at_import.py")
    put(folder, "sleeps.py", CORPUS / "sleep_forever_in_call.py")
    put(folder, "segfaults.py", CORPUS / "segfault.py")
    put(folder, "exits.py", CORPUS / "exit_at_import.py")

    code, _, err = batch(run_cli, folder, out)

    assert code == 0, err
    assert result(out, "good")["score"] == FULL
    for student, fragment in [
        ("loops", "importing the submission took longer than"),
        ("sleeps", "did not return within"),
        ("segfaults", "SIGSEGV"),
        ("exits", "called sys.exit(0)"),
    ]:
        r = result(out, student)
        assert r["gradable"] is True and r["score"] == 0, student
        assert any(fragment in c["message"] for c in r["checks"]), (student, [c["message"] for c in r["checks"]])


CRASH_PLUGIN = '''
"""A broken third-party plugin: it kills the batch worker on some submissions."""
import os

from grader import hookimpl


@hookimpl
def grader_grading_started(manifest, submission):
    name = os.path.basename(str(submission))
    if name.startswith("crash_always"):
        os._exit(9)
    if name.startswith("crash_once"):
        marker = os.path.join(os.environ["CRASH_MARKERS"], name)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)
'''


def test_a_dying_worker_is_replaced_and_its_submission_retried_once(
    lab, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "crash_plugin.py").write_text(CRASH_PLUGIN)
    info = site / "crash_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crash-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[grader]\ncrash = crash_plugin\n")
    (tmp_path / "markers").mkdir()
    monkeypatch.setenv("PYTHONPATH", str(site))  # the batch workers load it; this process does not
    monkeypatch.setenv("CRASH_MARKERS", str(tmp_path / "markers"))
    folder, out = tmp_path / "subs", tmp_path / "out"
    for name in ("good.py", "crash_once.py", "crash_always.py"):
        put(folder, name, SOLUTION)

    code, out_text, err = batch(run_cli, folder, out)

    assert code == 3, err
    assert "1 NOT GRADABLE" in out_text and "not gradable: crash_always" in err
    assert result(out, "good")["score"] == FULL
    assert result(out, "crash_once")["score"] == FULL  # died once, retried, graded
    broken = result(out, "crash_always")
    assert broken["gradable"] is False and broken["score"] == 0
    assert "batch worker failed twice on this submission (worker exited with status 9" in broken["error"]
    row = gradebook(out)["crash_always"]
    assert row["gradable"] == "no" and row["score"] == "" and row["percent"] == ""  # no grade, not a 0
    assert "## Not gradable" in (out / "summary.md").read_text()


VANISH_PLUGIN = '''
"""Another grader's sweep, played by a plugin: the first time a submission of a student whose
name starts with "swept" is graded, its private copy is deleted just before the worker imports it."""
import os

from grader.sandbox import client

_start = client.Submission.start


def start(self):
    marker = os.path.join(os.environ["VANISH_MARKERS"], self.filename)
    if self.filename.startswith("swept") and self.restarts == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        self._path.unlink()
    _start(self)


client.Submission.start = start
'''


def test_a_copy_that_vanished_is_not_gradable_and_the_next_run_grades_it(
    lab, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "vanish_plugin.py").write_text(VANISH_PLUGIN)
    info = site / "vanish_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vanish-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[grader]\nvanish = vanish_plugin\n")
    (tmp_path / "markers").mkdir()
    monkeypatch.setenv("PYTHONPATH", str(site))  # the batch workers load it; this process does not
    monkeypatch.setenv("VANISH_MARKERS", str(tmp_path / "markers"))
    folder, out = tmp_path / "subs", tmp_path / "out"
    for name in ("good.py", "swept.py"):
        put(folder, name, SOLUTION)

    code, out_text, err = batch(run_cli, folder, out)
    assert code == 3, err  # the grader failed on one student: that is what exit 3 says
    assert "1 NOT GRADABLE" in out_text and "not gradable: swept" in err
    swept = result(out, "swept")
    assert swept["gradable"] is False and swept["problem"] == "infrastructure"
    assert "the grader's private copy of the submission is not what the grader wrote (swept.py: No such file" in swept["error"]
    assert all(c["status"] == "error" and c["score"] == 0 for c in swept["checks"])
    assert gradebook(out)["swept"]["score"] == "" and gradebook(out)["swept"]["gradable"] == "no"
    assert "## Not gradable" in (out / "summary.md").read_text()
    assert result(out, "good")["score"] == FULL

    code, out_text, err = batch(run_cli, folder, out)  # the same command again: it grades the one left
    assert code == 0, err
    assert "1 already graded" in err and "grading 1 with" in err
    assert result(out, "swept")["gradable"] is True and result(out, "swept")["score"] == FULL
    assert gradebook(out)["swept"]["score"] == f"{FULL:g}" and "Not gradable" not in (out / "summary.md").read_text()


# --- killing the batch ----------------------------------------------------------------------------


def _strip_timings(r: dict) -> dict:
    r = {k: v for k, v in r.items() if k not in ("duration_s", "started_at")}
    r["checks"] = [{k: v for k, v in c.items() if k != "duration_s"} for c in r["checks"]]
    return r


def _batch_process(folder: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "grader", "batch", str(folder), "-e", "lab-01", "--out", str(out), "--jobs", "2", "--allow-unsandboxed"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip


def _children(pid: int) -> list[int]:
    kids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in text and b"grader.batch.worker" in cmdline:
            kids.append(int(status.parent.name))
    return kids


def _gone(pids: list[int], wait_s: float = 5.0) -> bool:
    """Every pid has exited (a zombie waiting for its new parent to reap it has exited)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if "Z" not in state.split()[1]:
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_batch_then_rerun_loses_nothing(lab, tmp_path: Path) -> None:
    folder = tmp_path / "subs"
    sources = [SOLUTION, *(wrong_file(p.stem) for p in sorted(WRONG.glob("*.patch"))[:5]), SOLUTION, SOLUTION]
    for i, source in enumerate(sources):
        put(folder, f"student{i:02d}.py", source)
    students = [f"student{i:02d}" for i in range(len(sources))]
    out = tmp_path / "killed"

    proc = _batch_process(folder, out)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if len([p for p in (out / ".state").glob("student*.json")]) >= 2:
            break
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    graded_before = len(list((out / ".state").glob("student*.json")))
    assert 2 <= graded_before < len(students), "the batch finished before it could be killed"
    assert workers
    assert _gone(workers), "batch workers outlived the batch"

    rerun = _batch_process(folder, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{graded_before} already graded" in err

    clean = tmp_path / "clean"
    whole = _batch_process(folder, clean)
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    for student in students:
        assert _strip_timings(result(out, student)) == _strip_timings(result(clean, student)), student
    assert not [p for p in out.rglob(".*") if p.name.endswith((".tmp", ".staging"))]


SLOW_ROUTE = "\n\n_route = route\n\ndef route(x, w_gate, k):\n    import time\n    time.sleep(1.2)\n    return _route(x, w_gate, k)\n"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_batch_alone_stops_it_keeping_what_is_graded(lab, tmp_path: Path, sig: int, code: int) -> None:
    """As ``timeout -s INT``, ``kill`` or a scheduler sends it: to the main pid only, with SIGINT
    ignored as a script's background job inherits it."""
    folder = tmp_path / "subs"
    put(folder, "ada.py", SOLUTION)
    for name in ("bob", "cyd", "dee"):
        put(folder, f"{name}.py", SOLUTION.read_text() + SLOW_ROUTE)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader", "batch", str(folder), "-e", "lab-01", "--out", str(out), "--jobs", "1", "--allow-unsandboxed"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / ".state" / "ada.json").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # bob is being graded now
    workers = _children(proc.pid)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the batch did not stop on {signal.Signals(sig).name}")
    assert proc.returncode == code, err
    assert "grader: interrupted; run the same command again to resume" in err and "Traceback" not in err
    assert workers and _gone(workers), "batch workers outlived the batch"
    assert result(out, "ada")["score"] == FULL and not (out / ".state" / "dee.json").exists()
    for name in ("bob", "cyd", "dee"):
        (folder / f"{name}.py").unlink()
    rerun = _batch_process(folder, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and "1 already graded" in err, err


# --- input errors, isolation, progress --------------------------------------------------------------


def test_batch_refuses_degraded_isolation(lab, run_cli, tmp_path: Path, weak_process_tier) -> None:
    put(tmp_path / "subs", "ada.py", SOLUTION)
    code, _, err = run_cli("batch", tmp_path / "subs", "-e", "lab-01", "--out", tmp_path / "out", "--sandbox", "process")
    assert code == 3
    assert "official grading needs the solutions, the secret seed and the network out of" in err and "--allow-unsandboxed" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batch", "no/such/dir", "-e", "lab-01"], "no/such/dir: no such folder"),
        (["batch", "{empty}", "-e", "lab-01"], "no submissions to grade"),
        (["batch", "{empty}", "-e", "lab-99"], "unknown exercise 'lab-99'"),
        (["batch", "{empty}", "-e", "lab-01", "--jobs", "0"], "must be at least 1"),
        (["batch", "{empty}"], "the following arguments are required: --exercise"),
    ],
)
def test_batch_bad_input_is_one_line_and_exit_2(lab, run_cli, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(*[a.replace("{empty}", str(tmp_path / "empty")) for a in args], "--out", tmp_path / "out")
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_progress_is_one_updating_line_on_a_terminal_and_plain_lines_otherwise() -> None:
    tty = io.StringIO()
    bar = Progress(2, tty, tty=True)
    bar.started_one(0, "ada")
    bar.finished_one(0, "ada", "10/10 (100%)")
    bar.close()
    text = tty.getvalue()
    assert "\n" not in text.rstrip("\n") and "\r\033[K[" in text and "1/2" in text and "grading ada" in text

    plain = io.StringIO()
    lines = Progress(2, plain, tty=False)
    lines.started_one(0, "ada")
    lines.finished_one(0, "ada", "10/10 (100%)")
    lines.finished_one(1, "ben\x1b[2J", "3/10 (30%)")
    assert plain.getvalue().splitlines() == ["[1/2] ada: 10/10 (100%)", "[2/2] ben?[2J: 3/10 (30%)"]


def test_the_eta_is_unknown_rather_than_zero_while_nothing_finished_or_one_runs_long(monkeypatch: pytest.MonkeyPatch) -> None:
    import grader.batch.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    tty = io.StringIO()
    bar = Progress(3, tty, tty=True)
    bar.started_one(0, "ada")
    clock[0] = 101.0
    assert bar.eta() == "?"  # nothing finished yet: no rate to go by (it read 0:00)
    bar.finished_one(0, "ada", "10/10 (100%)")
    bar.started_one(0, "bob")
    clock[0] = 102.0
    assert bar.eta() == "0:04"  # 2 left at 1 per 2 s
    clock[0] = 110.0  # bob has run 9 s; a submission takes about 1: it may run into its time limit
    assert bar.eta() == "?"
    bar.draw(force=True)
    assert tty.getvalue().rstrip().endswith("eta ?  grading bob 0:09")


def test_batch_worker_process_answers_on_its_own_channel(lab, tmp_path: Path) -> None:
    """The worker protocol, driven directly: a config line, a job line, JSON answers only."""
    out = tmp_path / "out" / "ada"
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader.batch.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    options = dataclasses.asdict(GradingOptions(official=True, allow_unsandboxed=True))
    config = {"op": "config", "manifest": str(lab / "manifest.toml"), "options": options, "parent": os.getpid()}
    job = {"op": "grade", "id": 7, "file": read_submission(SOLUTION).to_wire(), "out": str(out)}
    stdout, _ = proc.communicate("\n".join(json.dumps(m) for m in (config, job)) + "\n", timeout=120)
    messages = [json.loads(line) for line in stdout.splitlines()]
    assert messages[0]["op"] == "ready"
    assert {m["op"] for m in messages[1:-1]} == {"alive"}
    assert messages[-1]["op"] == "done" and messages[-1]["id"] == 7
    sent = GradeResult.model_validate(messages[-1]["result"])  # the whole result comes back on the wire
    assert sent.score == FULL and sent.gradable
    assert sent == GradeResult.model_validate_json((out / "result.json").read_text())


# --- shards and the merge ------------------------------------------------------------------------


def test_shards_are_stable_under_roster_changes_and_cover_everyone_once() -> None:
    roster = [f"student{i:03d}" for i in range(200)]
    four = {s: shard_of(s, 4) for s in roster}
    assert set(four.values()) == {1, 2, 3, 4}
    assert all(30 <= list(four.values()).count(k) <= 70 for k in range(1, 5)), "a hash should spread 200 students"
    changed = roster[50:] + ["newcomer", "late_add"]  # students left, others joined
    assert all(shard_of(s, 4) == four[s] for s in changed if s in four)
    assert [Shard(k, 4).holds(s) for s in roster for k in range(1, 5)].count(True) == len(roster)
    assert Shard.parse(" 2/4 ") == Shard(2, 4) and Shard(2, 4).name == "shard-2-of-4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3"], "--shard '3': expected K/N, e.g. 2/4"),
        (["--shard", "0/4"], "--shard '0/4': K must be between 1 and N"),
        (["--shard", "5/4"], "--shard '5/4': K must be between 1 and N"),
        (["--merge-only", "--shard", "1/2"], "--merge-only grades nothing: it takes no --shard or --force"),
        (["--merge-only"], "nothing was graded there (no .state folder)"),
    ],
)
def test_shard_and_merge_bad_input_is_one_line_and_exit_2(lab, run_cli, tmp_path: Path, args: list[str], message: str) -> None:
    put(tmp_path / "subs", "ada.py", SOLUTION)
    code, _, err = run_cli("batch", tmp_path / "subs", "-e", "lab-01", "--out", tmp_path / "out", *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _shard_process(folder: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "grader", "batch", str(folder), "-e", "lab-01", "--out", str(out), "--jobs", "1",
         "--allow-unsandboxed", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or dict(os.environ),
    )  # fmt: skip


def test_shards_grade_side_by_side_into_one_folder_and_the_merge_equals_one_batch(lab, run_cli, tmp_path: Path) -> None:
    folder, out, whole = tmp_path / "subs", tmp_path / "out", tmp_path / "whole"
    sources = [SOLUTION, *(wrong_file(p.stem) for p in sorted(WRONG.glob("*.patch"))[:4]), LAB01 / "starter.py"]
    students = [f"st{i}" for i in range(len(sources))]
    for student, source in zip(students, sources):
        put(folder, f"{student}.py", source)
    assert {shard_of(s, 2) for s in students} == {1, 2}

    shards = [_shard_process(folder, out, "--shard", f"{k}/2") for k in (1, 2)]  # at the same time
    for k, proc in enumerate(shards, start=1):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        mine = [s for s in students if shard_of(s, 2) == k]
        assert f"shard {k}/2: {len(mine)} submission" in stderr and f"{len(mine)} graded now" in stdout
    assert not (out / "summary.md").exists() and not (out / "gradebook.csv").exists()  # the merge writes those
    assert {p.stem for p in (out / ".state").glob("*.json")} == set(students)

    code, out_text, err = run_cli("batch", folder, "-e", "lab-01", "--out", out, "--merge-only")
    assert code == 0, err
    assert f"{len(students)} students, merged {len(students)} stored results" in out_text
    assert batch(run_cli, folder, whole)[0] == 0
    assert gradebook(out) == gradebook(whole)
    for student in students:
        assert _strip_timings(result(out, student)) == _strip_timings(result(whole, student)), student
    summary = (out / "summary.md").read_text()
    assert f"{len(students)} submissions · {len(students)} graded" in summary and "not graded yet" not in summary

    # Re-running a shard grades nothing; a plain batch over the same folder reuses every result.
    again = _shard_process(folder, out, "--shard", "2/2")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0 and "already graded" in stderr and "grading" not in stderr.split("already graded")[1]
    code, out_text, _ = batch(run_cli, folder, out)
    assert code == 0 and "0 graded now" in out_text and f"{len(students)} already graded" in out_text


def test_merge_lists_who_is_not_graded_yet_and_why(lab, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "subs", tmp_path / "out"
    students = [f"st{i}" for i in range(6)]
    for student in students:
        put(folder, f"{student}.py", SOLUTION)
    graded = [s for s in students if shard_of(s, 2) == 1]
    missing = [s for s in students if shard_of(s, 2) == 2]
    assert graded and missing
    monkeypatch.setenv("GRADER_SECRET_SEED", "first")
    code, _, err = batch(run_cli, folder, out, "--shard", "1/2")
    assert code == 0 and "GRADER_SECRET_SEED is not set" not in err

    code, out_text, err = run_cli("batch", folder, "-e", "lab-01", "--out", out, "--merge-only")
    assert code == 3
    assert f"{len(missing)} NOT GRADED YET" in out_text and f"{len(missing)} submission(s) not graded yet" in err
    summary = (out / "summary.md").read_text()
    assert f"**{len(missing)} not graded yet**" in summary
    for student in missing:
        assert f"| {student} | `{student}.py` | not graded yet |" in summary
    rows = gradebook(out)  # everyone, those not graded yet with an empty score (not a 0 to upload)
    assert set(rows) == set(students)
    assert all(rows[s]["score"] == "" and rows[s]["gradable"] == "" and rows[s]["percent"] == "" for s in missing)
    assert all(rows[s]["score"] == f"{FULL:g}" and rows[s]["gradable"] == "yes" for s in graded)

    monkeypatch.setenv("GRADER_SECRET_SEED", "another")  # merging with the wrong secret says so
    code, _, err = run_cli("batch", folder, "-e", "lab-01", "--out", out, "--merge-only")
    assert code == 3
    assert f"| {graded[0]} | `{graded[0]}.py` | graded with another seed" in (out / "summary.md").read_text()


def test_locks_let_shards_share_a_folder_but_not_a_shard(lab, tmp_path: Path) -> None:
    manifest = load_manifest(lab, default_plugins().checkers())
    out = tmp_path / "out"
    one, two = Store(out, manifest, Seeds(), Shard(1, 2)), Store(out, manifest, Seeds(), Shard(2, 2))
    with pytest.raises(Exception, match=r"shard 1/2 is already being graded there"):
        Store(out, manifest, Seeds(), Shard(1, 2))
    with pytest.raises(Exception, match="another grader batch is writing there"):
        Store(out, manifest, Seeds())  # a whole batch, or the merge, waits for the shards
    one.close()
    two.close()
    whole = Store(out, manifest, Seeds())
    with pytest.raises(Exception, match="a whole grader batch .or a merge. is writing there"):
        Store(out, manifest, Seeds(), Shard(1, 2))
    whole.close()
    Store(out, manifest, Seeds(), Shard(1, 2)).close()


def test_a_shard_sweeps_only_its_own_students_leftovers(lab, tmp_path: Path) -> None:
    manifest = load_manifest(lab, default_plugins().checkers())
    out = tmp_path / "out"
    leftovers = {}
    for student in ("ada", "ben"):
        staging = out / f".{student}.a1b2c3d4.staging"
        staging.mkdir(parents=True)
        record = out / ".state" / f".{student}.json.x9y8z7w6.tmp"
        record.parent.mkdir(exist_ok=True)
        record.write_text("{")
        inside = out / student / ".result.json.q1w2e3r4.tmp"
        inside.parent.mkdir()
        inside.write_text("{")
        leftovers[student] = [staging, record, inside]
    (out / ".summary.md.k9j8h7g6.tmp").write_text("half")

    Store(out, manifest, Seeds(), Shard(1, 2), students=["ada"]).close()
    assert not any(p.exists() for p in leftovers["ada"])
    assert all(p.exists() for p in leftovers["ben"]) and (out / ".summary.md.k9j8h7g6.tmp").exists()
    Store(out, manifest, Seeds()).close()  # the exclusive holder sweeps everything
    assert not any(p.exists() for p in leftovers["ben"]) and not (out / ".summary.md.k9j8h7g6.tmp").exists()


def _graded_on(gpu: str | None, node: str, score: float = 9.5) -> GradeResult:
    return GradeResult(
        exercise="lab-01-moe-routing", submission="x.py", submission_sha256="0", score=score, max_score=FULL,
        environment=Environment(grader="0", python="3", gpu=gpu, node=node), sandbox=SandboxInfo(mode="bubblewrap"),
    )  # fmt: skip


def test_gradebook_flags_scores_from_other_gpu_models(lab) -> None:
    manifest = load_manifest(lab, default_plugins().checkers())
    entries = [Entry(s, f"{s}.py", source_file(f"{s}.py", b""), "file") for s in ("ada", "ben", "cleo", "dev")]
    results = {
        "ada": _graded_on("NVIDIA H100 80GB HBM3", "gpu01"),
        "ben": _graded_on("NVIDIA H100 80GB HBM3", "gpu02"),
        "cleo": _graded_on("NVIDIA A100-SXM4-80GB", "gpu07"),
        "dev": _graded_on("NVIDIA H100 80GB HBM3", "gpu01"),
    }
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(gradebook_csv(manifest, entries, results)))}
    assert {s: (r["node"], r["gpu"], r["other_gpu"]) for s, r in rows.items()} == {
        "ada": ("gpu01", "NVIDIA H100 80GB HBM3", ""),
        "ben": ("gpu02", "NVIDIA H100 80GB HBM3", ""),
        "cleo": ("gpu07", "NVIDIA A100-SXM4-80GB", "yes"),
        "dev": ("gpu01", "NVIDIA H100 80GB HBM3", ""),
    }
    summary = summary_md(manifest, entries, [], results)
    assert "**Warning: scores were graded on 2 GPU models** (NVIDIA H100 80GB HBM3: 3, NVIDIA A100-SXM4-80GB: 1)" in summary
    assert "marks the 1 not graded on the NVIDIA H100 80GB HBM3" in summary

    same = {s: _graded_on("NVIDIA H100 80GB HBM3", r.environment.node or "") for s, r in results.items()}
    assert "Warning" not in summary_md(manifest, entries, [], same)
    assert "GPU: NVIDIA H100 80GB HBM3 · graded on 3 nodes" in summary_md(manifest, entries, [], same)
    rows = list(csv.DictReader(io.StringIO(gradebook_csv(manifest, entries, same))))
    assert {r["other_gpu"] for r in rows} == {""}
