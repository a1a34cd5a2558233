"""``grader batch`` as a TA meets it: layouts, reports, resume, failures that stay contained.

Gradings run through the real batch workers and sandbox on a copy of lab-01 with short time
limits and without its timing check (a measured speed is not deterministic, and these tests
compare results across runs).
"""

from __future__ import annotations

import csv
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

from grader.batch.progress import Progress
from grader.batch.store import Store
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.seeds import Seeds
from support import LAB01, ROOT, tight_limits

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
    put(folder, "ben.py", WRONG / "smallest_logits.py")
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
    assert "`sneaky.py` | is a symbolic link" in summary
    assert "`pipe.py` | is not a regular file" in summary
    assert "`notes.txt` | is not a Python (.py) file" in summary
    assert png_size((out / "histogram.png").read_bytes()) == (640, 360)


def _folders(folder: Path) -> dict[str, float]:
    put(folder, "ada/lab01/helper.py", "def helper():\n    return 1\n")
    put(folder, "ada/lab01/mine.py", SOLUTION)  # names the lab in an EXERCISE line
    put(folder, "ben/deep/er/ben_solution.py", WRONG / "offsets_off_by_one.py")
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
    put(folder, "submission_222/src/starter.py", WRONG / "mlp_without_relu.py")
    return {"Ada_Lovelace": FULL, "Grace_Hopper_+_Alan_Turing": FULL - 1 - 1 - 1.5 - 1}


def _canvas(folder: Path) -> dict[str, float]:
    put(folder, "lovelace_ada_12345_67890_starter.py", SOLUTION)
    put(folder, "hopper_grace_late_111_222_starter-1.py", WRONG / "smallest_logits.py")
    return {"lovelace_ada": FULL, "hopper_grace": FULL - 2 - 1 - 1.5}


@pytest.mark.parametrize("layout", [_folders, _gradescope, _canvas], ids=["folders", "gradescope", "canvas"])
def test_accepted_layouts(lab, run_cli, tmp_path: Path, layout) -> None:
    folder, out = tmp_path / "subs", tmp_path / "out"
    folder.mkdir()
    expected = layout(folder)

    code, _, err = batch(run_cli, folder, out)

    assert code == 0, err
    assert {s: result(out, s)["score"] for s in expected} == expected
    assert set(gradebook(out)) == set(expected)
    summary = (out / "summary.md").read_text()
    if layout is _folders:
        assert gradebook(out)["ada"]["file"] == "ada/lab01/mine.py"
        assert "`cleo` | 2 Python files and none is clearly the lab-01-moe-routing submission" in summary
        assert "`dan` | no Python (.py) file to grade (solution.py is a symbolic link (skipped))" in summary
    if layout is _gradescope:
        assert gradebook(out)["Ada_Lovelace"]["file"] == "submission_111/starter.py"
        assert "`submission_333` | named in submission_metadata.yml (No Folder) but has no folder" in summary


# --- resume -------------------------------------------------------------------------------------


def test_rerun_skips_graded_and_force_redoes_them(lab, run_cli, tmp_path: Path) -> None:
    folder, out = tmp_path / "subs", tmp_path / "out"
    put(folder, "ada.py", SOLUTION)
    ben = put(folder, "ben.py", WRONG / "smallest_logits.py")
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
    assert gradebook(out)["crash_always"]["gradable"] == "no"
    assert "## Not gradable" in (out / "summary.md").read_text()


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
    sources = [SOLUTION, *sorted(WRONG.glob("*.py"))[:5], SOLUTION, SOLUTION]
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


def test_batch_worker_process_answers_on_its_own_channel(lab, tmp_path: Path) -> None:
    """The worker protocol, driven directly: a config line, a job line, JSON answers only."""
    out = tmp_path / "out" / "ada"
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader.batch.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    config = {"op": "config", "manifest": str(lab / "manifest.toml"), "seed": None, "sandbox": None,
              "allow_unsandboxed": True, "slot": 0, "parent": os.getpid()}  # fmt: skip
    job = {"op": "grade", "id": 7, "path": str(SOLUTION), "out": str(out)}
    stdout, _ = proc.communicate("\n".join(json.dumps(m) for m in (config, job)) + "\n", timeout=120)
    messages = [json.loads(line) for line in stdout.splitlines()]
    assert messages[0]["op"] == "ready"
    assert {m["op"] for m in messages[1:-1]} == {"alive"}
    assert messages[-1] == {"op": "done", "id": 7, "score": FULL, "max_score": FULL, "gradable": True, "error": None}
    assert json.loads((out / "result.json").read_text())["score"] == FULL
