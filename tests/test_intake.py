"""One upload, one score: the same uploads through every door (``grader submit``, ``grader batch``,
the Slurm array's own shard script, PrairieLearn's and Gradescope's containers) get the same
gradability, score and per-check statuses; and the intake's rules, one by one.

What differs per door is only how each shows an upload that holds no submission (submit: exit
2; the batch: a skipped entry; each platform: its format's rule), and the reason is the same.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from support import LAB01, tight_limits, wrong_file

from grader import discovery
from grader.discovery import SubmissionFile, Upload, read_upload, resolve_lab
from grader.errors import UploadError, UsageError
from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.sandbox.tiers import probe

SOLUTION = (LAB01 / "solution.py").read_text()
ROUTE = SOLUTION[SOLUTION.index("def route") : SOLUTION.index("def expert_mlp")]


def without_timing(text: str) -> str:
    """A manifest edit: drop the 0.5-point timing check (a measured speed differs run to run)."""
    text = re.sub(r"\n\[checks\.grouped-is-faster\]\n(?:(?!\n\[).)*", "\n", text, flags=re.DOTALL)
    return re.sub(r"(\[functions\.moe_forward_grouped\]\n(?:[^\[].*\n)*?points = )3\b", r"\g<1>2.5", text)


def _two_files(folder: Path) -> None:
    (folder / "routing_helpers.py").write_text("import numpy as np\n\n\n" + ROUTE)
    rest = SOLUTION.replace(ROUTE, "")
    (folder / "moe.py").write_text(rest.replace("import numpy as np\n", "import numpy as np\n\nfrom routing_helpers import route\n", 1))


def _notebook(folder: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# My lab"), nbformat.v4.new_code_cell("%matplotlib inline")]
    nb.cells += [nbformat.v4.new_code_cell(part) for part in SOLUTION.split("\n\n\n")]
    (folder / "moe_lab.ipynb").write_text(nbformat.writes(nb))


UPLOADS: dict[str, Callable[[Path], None]] = {
    "single-file": lambda f: (f / "moe.py").write_text(wrong_file("smallest_logits")),
    "two-files": _two_files,
    "notebook": _notebook,
    "syntax-error": lambda f: (f / "moe.py").write_text(SOLUTION.replace("def route(x, w_gate, k):", "def route(x, w_gate, k)")),
    "wrong-exercise": lambda f: (f / "moe.py").write_text(SOLUTION.replace('"lab-01-moe-routing"', '"lab-03-tiled-gemm"')),
    "empty": lambda f: (f / "notes.txt").write_text("I forgot the code"),
}
REFUSED = {
    "wrong-exercise": "moe.py declares EXERCISE = 'lab-03-tiled-gemm' but this is lab-01-moe-routing: "
    "hand in your lab-01-moe-routing file, or fix its EXERCISE line",
    "empty": "no Python file (.py) or notebook (.ipynb) to grade",
}
"""The uploads that hold no submission, and the reason every door gives."""

Seen = tuple[bool, float, dict[str, str]] | str
"""What a door made of an upload: (gradable, score, status per check), or the reason it refused it."""


def _from_result(result: dict) -> Seen:
    return result["gradable"], result["score"], {c["id"]: c["status"] for c in result["checks"]}


def _submit(run_cli, upload: Path, out: Path) -> Seen:
    """As a student would: the file, or every file, or (nothing to name) the folder."""
    files = sorted(p for p in upload.iterdir() if p.suffix in (".py", ".ipynb"))
    code, _, err = run_cli("submit", *(files or [upload]), "--exercise", "lab-01", "--out", out)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        return err.strip().removeprefix("grader: error: ").removeprefix(f"{upload}: ")
    assert code == 0, err
    return _from_result(json.loads((out / "result.json").read_text()))


def _class_folder(folder: Path, out: Path) -> dict[str, Seen]:
    """A class graded in ``out``: each student's result, or the reason they were skipped."""
    seen: dict[str, Seen] = {}
    with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            seen[row["entry"]] = row["reason"]
    for student in UPLOADS:
        if (out / student / "result.json").is_file():
            seen[student] = _from_result(json.loads((out / student / "result.json").read_text()))
    return seen


def _container(run_cli, platform: str, root: Path) -> Seen:
    code, _, err = run_cli("lms", platform, "run", "--exercise", "lab-01", "--root", root)
    payload = json.loads((root / "results" / "results.json").read_text())
    if platform == "prairielearn":
        assert code == 0, err  # PrairieLearn reads the file only after exit 0
        if not payload["gradable"]:
            return payload["format_errors"][0].removeprefix("your upload: ")
        statuses = {t["name"]: t["output"].split("**")[1].lower() for t in payload["tests"]}
        earned, possible = sum(t["points"] for t in payload["tests"]), sum(t["max_points"] for t in payload["tests"])
        assert abs(payload["score"] - earned / possible) < 1e-6  # the fraction PrairieLearn stores
        return True, earned, statuses
    if not payload["extra_data"]["gradable"]:
        assert code == 2 and payload["score"] == 0 and "upload again" in payload["output"]
        return payload["extra_data"]["error"].removeprefix("your upload: ")
    assert code == 0, err
    return True, payload["score"], {t["extra_data"]["check"]: t["extra_data"]["status"] for t in payload["tests"]}


def _slurm(run_cli, folder: Path, out: Path) -> None:
    """The scripts ``grader slurm`` writes, run as Slurm runs them: array task 0 (its preflight,
    then its shard), then the merge (which writes the class outputs, skipped entries included)."""
    code, _, err = run_cli("slurm", folder, "--exercise", "lab-01", "--out", out, "--tasks", "1", "--print")
    assert code == 0, err
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURM_CPUS_PER_TASK="2")
    for script in ("grade.sbatch", "merge.sbatch"):
        done = subprocess.run(["bash", str(out / ".slurm" / script)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (script, done.stderr)


def test_the_same_uploads_get_the_same_verdict_through_every_door(make_lab, run_cli, tmp_path: Path, monkeypatch) -> None:
    if probe().mode != "bubblewrap":
        pytest.skip("official grading (batch, LMS) needs full isolation")
    make_lab(edit=lambda text: without_timing(tight_limits(text)))
    monkeypatch.setenv("GRADER_SECRET_SEED", "one course, one secret")
    monkeypatch.setenv("GRADER_LMS_TIMEOUT_S", "120")
    doors: dict[str, dict[str, Seen]] = {door: {} for door in ("submit", "batch", "slurm", "prairielearn", "gradescope")}
    folder = tmp_path / "class"
    for name, make in UPLOADS.items():
        upload = folder / name
        upload.mkdir(parents=True)
        make(upload)
        doors["submit"][name] = _submit(run_cli, upload, tmp_path / "submit" / name)
        for platform, inside in (("prairielearn", "student"), ("gradescope", "submission")):
            root = tmp_path / platform / name
            (root / inside).mkdir(parents=True)
            make(root / inside)
            doors[platform][name] = _container(run_cli, platform, root)
    code, _, err = run_cli("batch", folder, "--exercise", "lab-01", "--out", tmp_path / "batch", "--jobs", "2")
    assert code == 0, err
    doors["batch"] = _class_folder(folder, tmp_path / "batch")
    _slurm(run_cli, folder, tmp_path / "slurm")
    doors["slurm"] = _class_folder(folder, tmp_path / "slurm")

    for name in UPLOADS:
        seen = {door: results[name] for door, results in doors.items()}
        if name in REFUSED:
            assert all(reason == REFUSED[name] for reason in seen.values()), (name, seen)
            continue
        first = seen["submit"]
        assert isinstance(first, tuple) and first[0] is True, (name, first)
        assert all(other == first for other in seen.values()), (name, seen)
    graded = {name: doors["submit"][name] for name in UPLOADS if name not in REFUSED}
    assert graded["two-files"][1] == graded["notebook"][1] == 9.5  # the helper module and the notebook's cells count
    assert 0 < graded["single-file"][1] < 9.5 and graded["single-file"][2]["route-matches-reference"] == "failed"
    assert graded["syntax-error"][1] == 0 and set(graded["syntax-error"][2].values()) == {"error"}
    message = json.loads((tmp_path / "batch" / "syntax-error" / "result.json").read_text())["checks"][0]["message"]
    assert message == "importing the submission raised SyntaxError: expected ':' (line 8)"


# --- the intake's rules ---------------------------------------------------------------------------


@pytest.fixture
def manifest(make_lab):
    return load_manifest(make_lab(), default_plugins().checkers())


def _labs() -> dict[str, Path]:
    """The labs the grader ships (GRADER_EXERCISES aside)."""
    return discovery.find_labs(LAB01.parent.parent)


def test_a_folder_becomes_one_submission_with_its_helpers(manifest, tmp_path: Path) -> None:
    tmp_path = tmp_path / "upload"  # beside the lab's copy
    tmp_path.mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "moe.py").write_text(SOLUTION)
    (tmp_path / "src" / "util").mkdir()
    (tmp_path / "src" / "util" / "maths.py").write_text("ONE = 1\n")
    (tmp_path / "notes.py").write_text("# above the graded file's folder: not importable from it\n")
    (tmp_path / "src" / "linked.py").symlink_to(LAB01 / "solution.py")
    upload = read_upload(tmp_path)
    assert sorted(upload.files) == ["notes.py", "src/moe.py", "src/util/maths.py"]
    assert upload.notes == ("src/linked.py is a symbolic link (skipped)",)
    file = upload.submission(manifest)
    assert file.name == "moe.py" and dict(file.helpers) == {"util/maths.py": b"ONE = 1\n"}


def test_a_file_that_re_exports_a_helper_s_functions_is_the_graded_one(manifest, tmp_path: Path) -> None:
    """Both files name the lab and give its functions (one defines them, the other imports them):
    the one another file imports is the helper."""
    tmp_path = tmp_path / "upload"
    tmp_path.mkdir()
    (tmp_path / "moe_impl.py").write_text(SOLUTION)
    names = ", ".join(manifest.functions)
    (tmp_path / "moe.py").write_text(f'EXERCISE = "{manifest.id}"\nfrom moe_impl import {names}  # noqa: F401\n')
    file = read_upload(tmp_path).submission(manifest)
    assert file.name == "moe.py" and set(file.helpers) == {"moe_impl.py"}


def test_the_hash_covers_the_helpers_and_the_file_crosses_the_wire_whole(manifest, tmp_path: Path) -> None:
    alone = SubmissionFile("moe.py", SOLUTION.encode())
    assert alone.sha256 == discovery.sha256(SOLUTION.encode())  # a single file: its own hash, as before
    one = SubmissionFile("moe.py", b"x", {"h.py": b"1"})
    assert one.sha256 != SubmissionFile("moe.py", b"x", {"h.py": b"2"}).sha256 != alone.sha256
    assert one.sha256 != SubmissionFile("moe.py", b"x", {"g.py": b"1"}).sha256
    assert SubmissionFile.from_wire(json.loads(json.dumps(one.to_wire()))) == one


@pytest.mark.parametrize(
    ("files", "exercise", "lab"),
    [
        ({"a.py": SOLUTION}, None, "lab-01-moe-routing"),  # the EXERCISE line
        ({"a.py": SOLUTION.replace('EXERCISE = "lab-01-moe-routing"', "")}, None, "lab-01-moe-routing"),  # the functions
        ({"a.py": "x = 1\n", "b.py": SOLUTION}, None, "lab-01-moe-routing"),  # one file of several names it
        ({"a.py": SOLUTION}, "lab-03", "lab-03-tiled-gemm"),  # --exercise wins (the file's line is checked later)
    ],
)
def test_one_function_resolves_the_lab(files: dict[str, str], exercise: str | None, lab: str) -> None:
    upload = Upload("u", {n: SubmissionFile(n, t.encode()) for n, t in files.items()})
    assert resolve_lab(exercise, upload, _labs(), default_plugins().checkers()).id == lab


def test_an_upload_for_no_lab_or_two_labs_is_one_line_naming_the_candidates(tmp_path: Path) -> None:
    checkers = default_plugins().checkers()
    nothing = Upload("u", {"a.py": SubmissionFile("a.py", b"def unrelated():\n    pass\n")})
    with pytest.raises(UsageError, match="cannot tell which lab this file is for .candidates: "):
        resolve_lab(None, nothing, _labs(), checkers)
    other = (LAB01.parent / "lab-03-tiled-gemm" / "solution.py").read_text()
    both = Upload("u", {"a.py": SubmissionFile("a.py", SOLUTION.encode()), "b.py": SubmissionFile("b.py", other.encode())})
    with pytest.raises(UsageError, match="a.py names lab-01-moe-routing, b.py names lab-03-tiled-gemm.*pass --exercise"):
        resolve_lab(None, both, _labs(), checkers)
    typo = Upload("u", {"a.py": SubmissionFile("a.py", SOLUTION.replace("lab-01-moe-routing", "lab-99").encode())})
    with pytest.raises(UsageError, match="a.py: its EXERCISE line names unknown exercise 'lab-99'"):
        resolve_lab(None, typo, _labs(), checkers)


def test_with_one_lab_installed_every_upload_is_for_it(make_lab, monkeypatch) -> None:
    make_lab()  # GRADER_EXERCISES now holds lab-01 alone
    upload = Upload("u", {"a.py": SubmissionFile("a.py", b"def unrelated():\n    pass\n")})
    assert resolve_lab(None, upload, discovery.find_labs(), default_plugins().checkers()).id == "lab-01-moe-routing"


def test_several_candidates_are_refused_with_the_reason_and_what_was_passed_over(manifest, tmp_path: Path) -> None:
    tmp_path = tmp_path / "upload"
    tmp_path.mkdir()
    (tmp_path / "a.py").write_text(SOLUTION)
    (tmp_path / "b.py").write_text(SOLUTION)
    (tmp_path / "c.py").symlink_to(LAB01 / "solution.py")
    with pytest.raises(UploadError) as caught:
        read_upload(tmp_path, where="ada").submission(manifest)
    assert caught.value.where == "ada"
    assert caught.value.reason == (
        "2 Python files and none is clearly the lab-01-moe-routing submission (a.py, b.py); "
        'keep one, or add EXERCISE = "lab-01-moe-routing" to it (c.py is a symbolic link (skipped))'
    )


def test_several_files_on_the_command_line_are_one_upload(run_cli, tmp_path: Path) -> None:
    _two_files(tmp_path)
    code, out, err = run_cli("submit", tmp_path / "moe.py", tmp_path / "routing_helpers.py", "--out", tmp_path / "r", "-q")
    assert code == 0, err
    assert out.startswith("lab-01-moe-routing moe.py: 10/10")
    assert json.loads((tmp_path / "r" / "result.json").read_text())["helper_files"] == ["routing_helpers.py"]
    code, out, _ = run_cli("submit", tmp_path / "moe.py", "--out", tmp_path / "r", "-q")  # the helper left out
    assert code == 0 and "moe.py: 0/10" in out
    assert "No module named 'routing_helpers'" in (tmp_path / "r" / "scorecard.md").read_text()


def test_grade_file_fires_the_finished_hook_once_with_or_without_reports(manifest, tmp_path: Path) -> None:
    """The LMS containers and the labs' pytest write no reports; the hook fires for them too."""
    from grader import hookimpl, plugins
    from grader.session import grade_file

    seen: list[tuple[str, Path | None]] = []

    class Recorder:
        @hookimpl
        def grader_grading_finished(self, result, out_dir):
            seen.append((result.submission, out_dir))

    registry = plugins.build(autoload=False, extra=[Recorder()])
    file = discovery.intake(LAB01 / "solution.py", manifest)
    grade_file(file, manifest, plugins=registry)
    grade_file(file, manifest, out=tmp_path / "r", plugins=registry)
    assert seen == [("solution.py", None), ("solution.py", tmp_path / "r")]
