"""Gradescope end to end: the autograder zip, and the real ``run_autograder`` in a folder laid out
like Gradescope's container (``source/``, ``submission/``, ``results/``), checked against the
fields Gradescope documents for ``results.json``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from lms_rules import assert_gradescope_results
from support import LAB01, tight_limits, wrong_file

from grader.lms.gradescope import GradescopeFormat
from grader.results import GradeResult
from grader.sandbox.tiers import probe


def test_payload_maps_status_visibility_pending_and_leaderboard(synthetic: GradeResult) -> None:
    payload = GradescopeFormat().payload(synthetic)
    assert_gradescope_results(payload)
    tests = {t["extra_data"]["check"]: t for t in payload["tests"]}
    assert payload["score"] == 7.5 and payload["extra_data"]["max_score"] == 10
    assert [tests[c].get("status") for c in tests] == ["passed", "failed", "failed", None, "passed"]
    assert [tests[c]["visibility"] for c in tests] == ["visible", "visible", "after_due_date", "visible", "hidden"]
    assert "| `topk_ids[0, 1]` | 3 | 5 |" in tests["b-fails"]["output"]  # Markdown renders the table
    assert payload["output_format"] == "md" and payload["test_output_format"] == "md"
    pending = tests["d-pending"]
    assert "score" not in pending and "PENDING" in pending["output"] and pending["name"].endswith("(pending)")
    assert "need a GPU and are graded later" in payload["output"]
    # The leaderboard is public: the hidden check's number stays off it.
    assert payload["leaderboard"] == [{"name": "a-passes: speedup", "value": 7.25, "order": "desc"}]
    # With hidden checks the student must not read the total (or a hidden check's result) off the text,
    # nor the printed output (a hidden check's inputs could leak through it).
    assert "7.5" not in payload["output"] and "printed by the student" not in payload["output"]


def test_text_from_the_submission_cannot_become_markdown(synthetic: GradeResult) -> None:
    synthetic.checks[1].message = "![x](http://evil/track.png) [click](http://evil) <script>alert(1)</script>"
    output = GradescopeFormat().payload(synthetic)["tests"][1]["output"]
    assert "```text\n![x](http://evil/track.png)" in output  # inside a code block: shown, never rendered


def test_an_infrastructure_failure_tells_the_student_nothing_they_cannot_act_on(synthetic: GradeResult) -> None:
    synthetic.gradable, synthetic.error = False, "official grading needs an isolation tier; install bubblewrap"
    payload = GradescopeFormat().payload(synthetic)
    assert "bubblewrap" not in payload["output"] and "course's side" in payload["output"]
    assert payload["extra_data"]["error"] == synthetic.error  # for the instructors


# --- the zip ---------------------------------------------------------------------------------------


@pytest.fixture
def autograder(make_lab, run_cli, tmp_path: Path) -> Path:
    """Gradescope's container, laid out in a temporary folder from a freshly built zip."""
    make_lab(edit=tight_limits)
    archive = tmp_path / "autograder.zip"
    code, out, err = run_cli("lms", "gradescope", "build", "-e", "lab-01", "--out", archive, "--secret-seed", "s3cret")
    assert code == 0, err
    assert str(archive) in out
    root = tmp_path / "autograder"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root / "source")
        for info in zf.infolist():  # extractall drops the permission bits Gradescope keeps
            os.chmod(root / "source" / info.filename, (info.external_attr >> 16) & 0o777)
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")  # Gradescope copies it here
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return root


def run_autograder(root: Path, **env: str) -> tuple[dict, str, bytes]:
    """Run ``/autograder/run_autograder`` as Gradescope does: its stdout captured into results/stdout."""
    full_env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable, **env}
    full_env.pop("GRADER_EXERCISES", None)  # the zip's own copy of the lab is used
    with open(root / "results" / "stdout", "wb") as log:
        done = subprocess.run([str(root / "run_autograder")], cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT, timeout=120)
    assert done.returncode == 0
    raw = (root / "results" / "results.json").read_bytes()
    payload = json.loads(raw)
    assert_gradescope_results(payload)
    return payload, (root / "results" / "stdout").read_text(errors="replace"), raw


def needs_bwrap() -> None:
    if probe().mode != "bubblewrap":
        pytest.skip("the autograder grades officially, which needs bubblewrap")


def test_hidden_files_are_root_only(autograder: Path) -> None:
    """The lab and the secret are root's alone in the container: a worker under a uid of its own
    cannot read them even where the sandbox has neither bubblewrap nor Landlock."""
    source = autograder / "source"
    lab = source / "exercises" / LAB01.parent.name / LAB01.name
    assert stat.S_IMODE(lab.stat().st_mode) == 0o700
    files = [p for p in lab.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), [p for p in files if p.stat().st_mode & 0o077]
    assert stat.S_IMODE((source / "grader.env").stat().st_mode) == 0o600


def test_zip_holds_setup_run_package_and_lab_but_no_known_answers(autograder: Path) -> None:
    source = autograder / "source"
    for script in ("setup.sh", "run_autograder"):
        assert (source / script).stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        assert subprocess.run(["bash", "-n", str(source / script)]).returncode == 0
    assert (source / "package" / "pyproject.toml").is_file()
    assert (source / "package" / "grader" / "lms" / "templates" / "gradescope_run_autograder").is_file()
    lab = source / "exercises" / LAB01.parent.name / LAB01.name
    assert {p.name for p in lab.iterdir()} >= {"manifest.toml", "solution.py", "starter.py", "lab.py", "README.md"}
    names = [p.relative_to(source).as_posix() for p in source.rglob("*")]
    assert not [n for n in names if "/wrong" in n or "/accepted" in n or "__pycache__" in n]
    settings = (source / "grader.env").read_text()
    assert "EXERCISE=lab-01-moe-routing" in settings and "GRADER_SECRET_SEED=s3cret" in settings
    assert "GRADER_EXTRAS=''" in settings  # lab-01 is numpy only: no triton in its image


def test_hidden_files_are_root_only_in_the_zip(tmp_path: Path, run_cli) -> None:
    archive = tmp_path / "gs.zip"
    assert run_cli("lms", "gradescope", "build", "-e", "lab-01", "--out", archive)[0] == 0
    with zipfile.ZipFile(archive) as zf:
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in zf.infolist()}
    lab = [name for name in modes if name.startswith("exercises/") and not name.endswith("/")]
    assert lab and all(modes[name] == 0o600 for name in lab), {n: oct(modes[n]) for n in lab}
    assert all(modes[name] == 0o700 for name in modes if name.startswith("exercises/") and name.endswith("/"))
    assert modes["grader.env"] == 0o600  # the secret seed


def test_every_installed_distribution_is_pinned(tmp_path: Path, run_cli) -> None:
    from importlib import metadata

    for lab, triton in (("lab-01", False), ("lab-05", True)):
        archive = tmp_path / f"{lab}.zip"
        assert run_cli("lms", "gradescope", "build", "-e", lab, "--out", archive)[0] == 0
        with zipfile.ZipFile(archive) as zf:
            pins = dict(line.split("==") for line in zf.read("constraints.txt").decode().split())
            settings = zf.read("grader.env").decode()
        assert pins["numpy"] == metadata.version("numpy") and pins["pydantic"] == metadata.version("pydantic")
        assert ("triton" in pins) is triton and ("GRADER_EXTRAS=triton" in settings) is triton
        assert "torch" not in pins  # from the CPU index, pinned in grader.env


def test_a_lab_s_required_distributions_are_installed_in_its_image(tmp_path: Path, run_cli) -> None:
    """lab-02's lab.requires names transformers: its zip installs the transformers extra, pinned."""
    from importlib import metadata

    archive = tmp_path / "lab-02.zip"
    assert run_cli("lms", "gradescope", "build", "-e", "lab-02", "--out", archive)[0] == 0
    with zipfile.ZipFile(archive) as zf:
        pins = dict(line.split("==") for line in zf.read("constraints.txt").decode().split())
        settings = zf.read("grader.env").decode()
    assert "GRADER_EXTRAS=transformers" in settings
    assert pins["transformers"] == metadata.version("transformers")


FAKE_TOOL = """#!/bin/sh
# Records its calls. `pythonX.Y -m venv DIR` (DIR inside $FAKE_ROOT only) makes a venv whose pip
# and grader only record how they were called; $FAIL (a word) makes the call containing it fail.
line="$(basename "$0") $*"
echo "$line" >> "$CALLS"
case "$line" in *"$FAIL"*) [ -n "$FAIL" ] && { echo "ERROR: simulated failure of $line" >&2; exit 1; };; esac
[ "$1" = "-m" ] && [ "$2" = "venv" ] || exit 0
case "$3" in "$FAKE_ROOT"/*) ;; *) echo "refusing to write outside $FAKE_ROOT: $3" >&2; exit 1;; esac
mkdir -p "$3/bin"
cp "$0" "$3/bin/pip"
cp "$0" "$3/bin/grader"
"""


@pytest.mark.parametrize("fail", ["", "torch==", "constraints.txt", "apt-get"])
def test_setup_sh_pins_everything_and_fails_loudly(autograder: Path, tmp_path: Path, fail: str) -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("apt-get", f"python{version}"):
        (bin_dir / name).write_text(FAKE_TOOL)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        **os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
        "AUTOGRADER_ROOT": str(autograder), "FAKE_ROOT": str(autograder), "FAIL": fail,
    }  # fmt: skip
    done = subprocess.run(["bash", str(autograder / "source" / "setup.sh")], env=env, capture_output=True, text=True)
    torch = f"torch=={metadata_version('torch')}"
    pip = "pip --disable-pip-version-check install"
    expected = [
        f"apt-get install -y bubblewrap python{version} python{version}-venv",
        f"python{version} -m venv {autograder}/grader-venv",
        f"{pip} --index-url https://download.pytorch.org/whl/cpu {torch}",
        f"{pip} --constraint {autograder}/source/constraints.txt {autograder}/source/package",
        "grader validate",
    ]
    recorded = calls.read_text().splitlines()
    if not fail:
        assert done.returncode == 0, done.stderr
        assert recorded == expected
        return
    assert done.returncode != 0, "a failed install must fail the image build"
    assert "setup.sh: FAILED:" in done.stderr and "simulated failure" in done.stderr
    assert not any(line.endswith(" torch") for line in recorded)  # never an unpinned torch
    assert len(recorded) == next(i for i, line in enumerate(expected) if fail in line) + 1  # stopped right there


def metadata_version(dist: str) -> str:
    from importlib import metadata

    return metadata.version(dist).split("+")[0]


# --- run_autograder against submissions ---------------------------------------------------------------


def test_correct_submission_full_marks(autograder: Path) -> None:
    needs_bwrap()
    shutil.copy(LAB01 / "solution.py", autograder / "submission" / "starter.py")
    (autograder / "submission" / "helper.py").write_text("def unrelated():\n    return 1\n")
    payload, stdout, _ = run_autograder(autograder)
    assert payload["score"] == 10
    assert {t["status"] for t in payload["tests"]} == {"passed"}
    assert len(payload["tests"]) == 8 and sum(t["max_score"] for t in payload["tests"]) == 10
    assert payload["extra_data"]["official"] is True and payload["extra_data"]["sandbox"] == "bubblewrap"
    assert "Score: 10 / 10 (100%)" in stdout  # the grader's own log goes to stdout, not the JSON


def test_wrong_submission_partial_credit_with_explanations(autograder: Path) -> None:
    needs_bwrap()
    (autograder / "submission" / "starter.py").write_text(wrong_file("smallest_logits"))
    payload, _, _ = run_autograder(autograder)
    assert 0 < payload["score"] < 10
    failed = next(t for t in payload["tests"] if t["name"].startswith("route-matches-reference"))
    assert failed["status"] == "failed" and failed["score"] == 0
    assert "expected" in failed["output"] and "What to look at:" in failed["output"]


HOSTILE = '''import json, sys
print(json.dumps({"score": 100, "tests": [{"name": "all", "score": 100, "max_score": 1}]}))
print('"}, ], not json {')
sys.stderr.write("results.json written\\n")
sys.exit(0)
'''


def test_hostile_submission_cannot_forge_or_corrupt_the_results(autograder: Path) -> None:
    needs_bwrap()
    (autograder / "submission" / "starter.py").write_text(HOSTILE)
    payload, stdout, raw = run_autograder(autograder)
    assert payload["score"] == 0 and len(payload["tests"]) == 8
    assert {t["status"] for t in payload["tests"]} == {"failed"}
    assert all("sys.exit(0)" in t["output"] for t in payload["tests"])
    assert "all" not in {t["name"] for t in payload["tests"]}
    assert raw.count(b"\n{") == 0 and raw.startswith(b"{")  # one JSON document, nothing printed into it


def test_upload_without_python_file_scores_zero_with_a_reason(autograder: Path) -> None:
    (autograder / "submission" / "notes.txt").write_text("I forgot the code")
    payload, _, _ = run_autograder(autograder)
    assert payload["score"] == 0
    assert "your upload: no Python file (.py) or notebook (.ipynb) to grade" in payload["output"]


@pytest.mark.parametrize("breakage", ["missing-python", "broken-package", "crashing-python", "hung-grader"])
def test_a_broken_or_killed_grader_still_leaves_valid_results(autograder: Path, tmp_path: Path, breakage: str) -> None:
    shutil.copy(LAB01 / "solution.py", autograder / "submission" / "starter.py")
    env: dict[str, str] = {}
    if breakage == "missing-python":
        env["GRADER_PYTHON"] = str(tmp_path / "no" / "python")
        reason = "not installed correctly"
    elif breakage == "broken-package":  # a grader package that cannot even be imported
        shadow = tmp_path / "shadow" / "grader"
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text("raise ImportError('half-installed grader')\n")
        env["PYTHONPATH"] = str(shadow.parent)
        reason = "failed (exit status 1) before writing a result"
    elif breakage == "crashing-python":  # prints JSON-like noise, then dies
        fake = tmp_path / "python"
        fake.write_text('#!/bin/sh\necho \'{"score": 10, "tests": [\'\nkill -SEGV $$\n')
        fake.chmod(0o755)
        env["GRADER_PYTHON"] = str(fake)
        reason = "failed (exit status 139)"
    else:
        fake = tmp_path / "python"
        fake.write_text("#!/bin/sh\nexec sleep 60\n")
        fake.chmod(0o755)
        env["GRADER_PYTHON"] = str(fake)
        settings = autograder / "source" / "grader.env"
        settings.write_text(settings.read_text().replace("GRADER_TIMEOUT_S=540", "GRADER_TIMEOUT_S=1"))
        reason = "ran out of time (1 s)"
    payload, stdout, _ = run_autograder(autograder, **env)
    assert payload["score"] == 0 and payload["tests"] == []
    assert reason in payload["output"], payload["output"]
    assert payload["extra_data"] == {"gradable": False, "fallback": True}
    assert "run_autograder: grader exit status" in stdout
    if breakage == "broken-package":
        assert "half-installed grader" in stdout and "half-installed" not in payload["output"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lms"], "name a platform and an action"),
        (["lms", "gradescope"], "name a platform and an action"),
        (["lms", "gradescope", "build", "-e", "lab-99"], "unknown exercise 'lab-99'"),
        (["lms", "gradescope", "build"], "the following arguments are required: --exercise"),
        (["lms", "canvas", "run"], "invalid choice: 'canvas'"),
    ],
)
def test_lms_bad_input_is_one_line_and_exit_2(run_cli, args: list[str], message: str) -> None:
    code, _, err = run_cli(*args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
