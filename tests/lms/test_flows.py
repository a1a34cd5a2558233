"""Both platforms' container flows, upload by upload, as the platforms run them: the upload in its
folder, the grader's `run` command, the result file read back and checked against the platform's
documented rules (PrairieLearn: the container exits 0, or the file is thrown away; `gradable:
false` for an upload that cannot be graded; hidden checks never revealed before release)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from lms_rules import assert_gradescope_results, assert_prairielearn_results
from support import LAB01, ROOT, tight_limits, wrong_file

from grader.sandbox.tiers import probe

LAB05 = ROOT / "exercises" / "phase-07-gemm-and-moe-kernels" / "lab-05-fused-moe-kernel"
SOLUTION = (LAB01 / "solution.py").read_text()


def _notebook(folder: Path) -> None:
    """The solution as a student's notebook: a markdown cell, magics, the code split over cells."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# My MoE routing lab")]
    nb.cells.append(nbformat.v4.new_code_cell("%matplotlib inline\n!pip install nothing"))
    nb.cells.append(nbformat.v4.new_code_cell("%%timeit\nx = 1"))
    for part in SOLUTION.split("\n\n\n"):
        nb.cells.append(nbformat.v4.new_code_cell(part))
    (folder / "moe_lab.ipynb").write_text(nbformat.writes(nb))


def _two_files(folder: Path) -> None:
    """The graded file imports the student's own module (the route function lives there)."""
    route = SOLUTION[SOLUTION.index("def route") : SOLUTION.index("def expert_mlp")]
    (folder / "routing_helpers.py").write_text("import numpy as np\n\n\n" + route)
    rest = SOLUTION.replace(route, "")
    (folder / "moe.py").write_text(rest.replace("import numpy as np\n", "import numpy as np\n\nfrom routing_helpers import route\n", 1))


HANG = """import time
EXERCISE = "lab-01-moe-routing"

def _slow(*args):
    time.sleep(1.8)  # just under the 2 s limit of each call: only the grading's deadline stops it
    raise ValueError("slow")

route = expert_mlp = permute = moe_forward_reference = moe_forward_grouped = _slow
"""

UPLOADS: dict[str, Callable[[Path], None]] = {
    "solution": lambda f: (f / "moe.py").write_text(SOLUTION),
    "starter": lambda f: shutil.copy(LAB01 / "starter.py", f / "starter.py"),
    "wrong": lambda f: (f / "moe.py").write_text(wrong_file("smallest_logits")),
    "syntax-error": lambda f: (f / "moe.py").write_text(SOLUTION.replace("def route(x, w_gate, k):", "def route(x, w_gate, k)")),
    "empty": lambda f: (f / "notes.txt").write_text("I forgot the code"),
    "notebook": _notebook,
    "two-files": _two_files,
    "hang": lambda f: (f / "moe.py").write_text(HANG),
}
# (gradable, lowest and highest fraction of the lab's points) after grading on upload
EXPECTED = {
    "solution": (True, 1.0, 1.0),
    "starter": (True, 0.0, 0.0),
    "wrong": (True, 0.05, 0.95),
    "syntax-error": (True, 0.0, 0.0),  # the student's own file: graded, the line named
    "empty": (False, 0.0, 0.0),
    "notebook": (True, 1.0, 1.0),
    "two-files": (True, 1.0, 1.0),
    "hang": (True, 0.0, 0.0),
}
TIMEOUT_S = 14.0
"""The platform timeout the hang is graded under (PrairieLearn's default is 30 s)."""


@pytest.fixture
def lab(make_lab) -> Path:
    return make_lab(edit=tight_limits)


def _container(run_cli, platform: str, tmp_path: Path, upload: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict, float]:
    root = tmp_path / platform
    folder = root / ("submission" if platform == "gradescope" else "student")
    folder.mkdir(parents=True)
    UPLOADS[upload](folder)
    monkeypatch.setenv("GRADER_LMS_TIMEOUT_S", str(TIMEOUT_S))
    started = time.monotonic()
    code, _, _ = run_cli("lms", platform, "run", "--exercise", "lab-01", "--root", root)
    elapsed = time.monotonic() - started
    raw = (root / "results" / "results.json").read_bytes()
    if platform == "prairielearn":
        return code, assert_prairielearn_results(raw), elapsed
    payload = json.loads(raw)
    assert_gradescope_results(payload)
    return code, payload, elapsed


@pytest.mark.parametrize("upload", list(UPLOADS))
def test_prairielearn_flow(lab, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upload: str) -> None:
    if probe().mode != "bubblewrap":
        pytest.skip("official grading needs full isolation")
    code, payload, elapsed = _container(run_cli, "prairielearn", tmp_path, upload, monkeypatch)
    assert code == 0, "PrairieLearn reads results.json only after the container exits 0"
    gradable, low, high = EXPECTED[upload]
    assert payload["gradable"] is gradable
    assert low <= payload["score"] <= high
    if not gradable:
        assert "tests" not in payload  # a not-gradable upload uses no attempt and shows no zeros
        assert "no Python file (.py) or notebook" in payload["format_errors"][0]
    if upload == "syntax-error":
        assert all("SyntaxError: expected ':' (line 8)" in t["message"] for t in payload["tests"])
    if upload == "notebook":
        assert "Graded file: moe_lab.ipynb" in payload["output"]
    if upload == "two-files":
        assert "Graded file: moe.py" in payload["output"] and "routing_helpers.py" in payload["output"]
    if upload == "hang":
        assert elapsed < TIMEOUT_S, f"took {elapsed:.1f} s, past the platform's {TIMEOUT_S:g} s"
        assert any("overall deadline" in t["message"] for t in payload["tests"])


@pytest.mark.parametrize("upload", list(UPLOADS))
def test_gradescope_flow(lab, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upload: str) -> None:
    if probe().mode != "bubblewrap":
        pytest.skip("official grading needs full isolation")
    code, payload, elapsed = _container(run_cli, "gradescope", tmp_path, upload, monkeypatch)
    gradable, low, high = EXPECTED[upload]
    assert payload["extra_data"]["gradable"] is gradable
    assert code == (0 if gradable else 2)  # run_autograder itself always exits 0 (tested with the zip)
    assert low * 10 <= payload["score"] <= high * 10
    if not gradable:
        assert "NOT GRADED" in payload["output"] and "upload again" in payload["output"]
    if upload == "notebook":
        assert "Graded file: `moe_lab.ipynb`" in payload["output"]
    if upload == "two-files":
        assert "`routing_helpers.py`" in payload["output"]
    if upload == "hang":
        assert elapsed < TIMEOUT_S
        assert any("overall deadline" in t["output"] for t in payload["tests"])


def test_hidden_checks_are_never_revealed_before_release(make_lab, run_cli, tmp_path: Path, monkeypatch) -> None:
    """A wrong route fails a hidden check: neither platform's student view may show it."""
    if probe().mode != "bubblewrap":
        pytest.skip("official grading needs full isolation")

    def hide(text: str) -> str:
        text = tight_limits(text)
        return text.replace("[checks.route-matches-reference]\n", '[checks.route-matches-reference]\nvisibility = "hidden"\n')

    make_lab(edit=hide)
    _, pl, _ = _container(run_cli, "prairielearn", tmp_path, "wrong", monkeypatch)
    names = [t["name"] for t in pl["tests"]]
    assert "route-matches-reference" not in names and "route-matches-reference" not in json.dumps(pl)
    assert "more points come from checks graded later" in pl["output"]
    _, gs, _ = _container(run_cli, "gradescope", tmp_path, "wrong", monkeypatch)
    hidden = next(t for t in gs["tests"] if t["name"].startswith("route-matches-reference"))
    assert hidden["visibility"] == "hidden" and hidden["status"] == "failed"
    assert f"{gs['score']:g} / 10" not in gs["output"] and "/ 10" not in gs["output"]  # no total to read
    assert "Some checks stay hidden" in gs["output"]


def test_a_gpu_lab_on_a_cpu_platform_grades_its_cpu_part_and_leaves_the_rest_pending(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if probe().mode != "bubblewrap":
        pytest.skip("official grading needs full isolation")
    monkeypatch.setenv("GRADER_NO_GPU", "1")
    monkeypatch.setenv("GRADER_LMS_TIMEOUT_S", "180")  # the question's timeout: Triton's interpreter is slow on a CPU
    for platform in ("prairielearn", "gradescope"):
        root = tmp_path / platform
        folder = root / ("student" if platform == "prairielearn" else "submission")
        folder.mkdir(parents=True)
        shutil.copy(LAB05 / "solution.py", folder / "solution.py")
        code, _, _ = run_cli("lms", platform, "run", "--exercise", "lab-05", "--root", root)
        raw = (root / "results" / "results.json").read_bytes()
        if platform == "prairielearn":
            pl = assert_prairielearn_results(raw)
            assert code == 0 and pl["gradable"] is True and pl["score"] == 1.0  # every point graded on upload earned
            assert not any("gpu" in t["name"] or "speed" in t["name"] for t in pl["tests"])
            assert "12 more points come from checks graded later" in pl["output"]
        else:
            gs = json.loads(raw)
            assert_gradescope_results(gs)
            pending = [t for t in gs["tests"] if "score" not in t]
            assert len(pending) == 3 and all("PENDING" in t["output"] for t in pending)
            assert all("status" not in t for t in pending)  # pending, never failed
            assert all(t["status"] == "passed" for t in gs["tests"] if "score" in t)
            assert gs["score"] == 8 and "need a GPU and are graded later" in gs["output"]


def test_the_zip_of_a_gpu_lab_says_which_points_are_deferred(run_cli, tmp_path: Path) -> None:
    code, out, _ = run_cli("lms", "gradescope", "build", "-e", "lab-05", "--out", tmp_path / "gs.zip", "--secret-seed", "x")
    assert code == 0
    assert "8 of 20 points are graded on upload" in out
    assert "DEFERRED: 12 points need a GPU (fused-moe-matches-oracle-gpu, fused-moe-speed, triton-kernels-on-the-profile)" in out
    code, out, _ = run_cli("lms", "prairielearn", "config", "-e", "lab-05", "--timeout", "60")
    assert code == 0 and '"autoPoints": 8.0, "manualPoints": 12.0' in out and '"timeout": 60' in out


def test_points_graded_later_go_back_as_each_platforms_upload_csv(make_lab, run_cli, tmp_path: Path) -> None:
    """The class is graded in a batch (as on the GPU machine); the points the upload could not
    give (here a hidden check, on PrairieLearn) come back as PrairieLearn's manual-points CSV, and
    Gradescope's rows name each submitter from the export's metadata."""
    import csv
    import io
    import textwrap

    def hide(text: str) -> str:
        return tight_limits(text).replace("[checks.route-matches-reference]\n", '[checks.route-matches-reference]\nvisibility = "hidden"\n')

    make_lab(edit=hide)
    folder, out = tmp_path / "export", tmp_path / "graded"
    (folder / "submission_1").mkdir(parents=True)
    (folder / "submission_1" / "moe.py").write_text(SOLUTION)
    (folder / "submission_2").mkdir()
    (folder / "submission_2" / "moe.py").write_text(wrong_file("smallest_logits"))
    (folder / "submission_metadata.yml").write_text(textwrap.dedent("""\
        submission_1:
          :submitters:
          - :name: Ada Lovelace
            :sid: '100'
            :email: ada@example.edu
        submission_2:
          :submitters:
          - :name: Grace Hopper
            :email: grace@example.edu
          - :name: Alan Turing
            :sid: '300'
        """))
    code, _, err = run_cli("batch", folder, "-e", "lab-01", "--out", out, "--allow-unsandboxed")
    assert code == 0, err
    code, text, err = run_cli("lms", "prairielearn", "scores", out, "-e", "lab-01", "--qid", "moeRouting")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["uid"]: r["manual_points"] for r in rows} == {
        "ada@example.edu": "2", "grace@example.edu": "0", "Grace_Hopper_+_Alan_Turing": "0",  # no email: the folder
    }  # fmt: skip
    assert all(r["qid"] == "moeRouting" and r["instance"] == "1" for r in rows)
    assert "route-matches-reference: 2/2 (passed)" in rows[0]["feedback"]
    code, text, err = run_cli("lms", "gradescope", "scores", out, "-e", "lab-01")
    assert code == 0, err
    people = list(csv.DictReader(io.StringIO(text)))
    assert [(p["Name"], p["SID"], p["Email"], p["Score"]) for p in people] == [
        ("Ada Lovelace", "100", "ada@example.edu", "0"),  # Gradescope grades hidden checks on upload: nothing deferred
        ("Grace Hopper", "", "grace@example.edu", "0"),
        ("Alan Turing", "300", "", "0"),
    ]


def test_a_gpu_check_still_pending_is_never_uploaded_as_a_zero(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GRADER_NO_GPU", "1")
    folder, out = tmp_path / "class", tmp_path / "graded"
    folder.mkdir()
    shutil.copy(LAB05 / "solution.py", folder / "ada.py")
    assert run_cli("batch", folder, "-e", "lab-05", "--out", out, "--allow-unsandboxed")[0] == 0
    code, text, err = run_cli("lms", "gradescope", "scores", out, "-e", "lab-05")
    assert code == 3 and text.strip() == "Name,SID,Email,Score"
    assert "left out ada: graded without a GPU: fused-moe-matches-oracle-gpu, fused-moe-speed" in err
