"""Gradescope end to end: the autograder zip, and the real ``run_autograder`` in a folder laid out
like Gradescope's container (``source/``, ``submission/``, ``results/``), checked against the
fields Gradescope documents for ``results.json``."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.lms.gradescope import GradescopeFormat
from grader.results import GradeResult
from grader.sandbox.launchers import probe
from support import LAB01, tight_limits

VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}
TOP_FIELDS = {
    "score", "execution_time", "output", "output_format", "test_output_format", "test_name_format", "visibility",
    "stdout_visibility", "extra_data", "tests", "leaderboard",
}  # fmt: skip
TEST_FIELDS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags", "visibility", "extra_data"}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def assert_gradescope_results(payload: dict) -> None:
    """``results.json`` as Gradescope's spec describes it (types, allowed values, bounds)."""
    assert set(payload) <= TOP_FIELDS, set(payload) - TOP_FIELDS
    assert _number(payload["score"]) and payload["score"] >= 0
    assert isinstance(payload.get("output", ""), str)
    for key in ("output_format", "test_output_format", "test_name_format"):
        assert payload.get(key, "text") in FORMATS
    for key in ("visibility", "stdout_visibility"):
        assert payload.get(key, "visible") in VISIBILITY
    if "execution_time" in payload:
        assert _number(payload["execution_time"])
    assert isinstance(payload.get("extra_data", {}), dict)
    assert isinstance(payload["tests"], list)
    for test in payload["tests"]:
        assert set(test) <= TEST_FIELDS, set(test) - TEST_FIELDS
        assert _number(test["score"]) and _number(test["max_score"])
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in ("passed", "failed")
        assert isinstance(test["name"], str) and isinstance(test["number"], str) and isinstance(test["output"], str)
        assert test["visibility"] in VISIBILITY
        assert all(isinstance(tag, str) for tag in test["tags"])
    if payload["tests"] and payload["score"] > 0:
        assert abs(payload["score"] - sum(t["score"] for t in payload["tests"])) < 1e-9


def test_payload_maps_status_and_visibility(synthetic: GradeResult) -> None:
    payload = GradescopeFormat().payload(synthetic)
    assert_gradescope_results(payload)
    tests = {t["extra_data"]["check"]: t for t in payload["tests"]}
    assert payload["score"] == 7.5 and payload["extra_data"]["max_score"] == 10
    assert [tests[c]["status"] for c in tests] == ["passed", "failed", "failed", "failed", "passed"]
    assert [tests[c]["visibility"] for c in tests] == ["visible", "visible", "after_due_date", "visible", "hidden"]
    assert "topk_ids[0, 1]: expected 3, got 5" in tests["b-fails"]["output"]
    assert tests["d-skipped"]["output"].startswith("SKIPPED: needs a CUDA GPU")
    assert tests["a-passes"]["extra_data"]["duration_s"] == 0.25
    # A hidden check's inputs could leak through what the code printed, so it is not shown.
    assert "printed by the student" not in payload["output"]


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
    setup = (source / "setup.sh").read_text()
    assert "apt-get install -y bubblewrap python3 python3-venv" in setup
    assert "python3 -m venv" in setup and "CPU_INDEX=https://download.pytorch.org/whl/cpu" in setup
    assert 'pip" install "$SOURCE/package"' in setup
    assert (source / "package" / "pyproject.toml").is_file()
    assert (source / "package" / "grader" / "lms" / "templates" / "gradescope_run_autograder").is_file()
    lab = source / "exercises" / LAB01.parent.name / LAB01.name
    assert {p.name for p in lab.iterdir()} >= {"manifest.toml", "solution.py", "starter.py", "lab.py", "README.md"}
    names = [p.relative_to(source).as_posix() for p in source.rglob("*")]
    assert not [n for n in names if "/wrong" in n or "/accepted" in n or "__pycache__" in n]
    settings = (source / "grader.env").read_text()
    assert "EXERCISE=lab-01-moe-routing" in settings and "GRADER_SECRET_SEED=s3cret" in settings


FAKE_PYTHON3 = """#!/bin/sh
# Records its calls; `python3 -m venv DIR` (DIR inside $FAKE_ROOT only) makes a venv whose pip
# and grader only record how they were called.
echo "python3 $*" >> "$CALLS"
[ "$1" = "-m" ] && [ "$2" = "venv" ] || exit 0
case "$3" in "$FAKE_ROOT"/*) ;; *) echo "refusing to write outside $FAKE_ROOT: $3" >&2; exit 1;; esac
mkdir -p "$3/bin"
printf '#!/bin/sh\\necho "pip $*" >> "$CALLS"\\ncase "$*" in *"torch=="*) [ -n "$FAIL_PIN" ] && exit 1;; esac\\nexit 0\\n' > "$3/bin/pip"
printf '#!/bin/sh\\necho "grader $* GRADER_EXERCISES=$GRADER_EXERCISES" >> "$CALLS"\\n' > "$3/bin/grader"
chmod +x "$3/bin/pip" "$3/bin/grader"
"""


@pytest.mark.parametrize("pin_available", [True, False])
def test_setup_sh_installs_bubblewrap_cpu_torch_and_the_bundled_package(autograder: Path, tmp_path: Path, pin_available: bool) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text('#!/bin/sh\necho "apt-get $*" >> "$CALLS"\n')
    (bin_dir / "python3").write_text(FAKE_PYTHON3)
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        **os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
        "AUTOGRADER_ROOT": str(autograder), "FAKE_ROOT": str(autograder),
    }  # fmt: skip
    if not pin_available:
        env["FAIL_PIN"] = "1"
    done = subprocess.run(["bash", str(autograder / "source" / "setup.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    torch = f"torch=={metadata_version('torch')}"
    cpu = "--index-url https://download.pytorch.org/whl/cpu"
    expected = [
        "apt-get install -y bubblewrap python3 python3-venv",
        f"python3 -m venv {autograder}/grader-venv",
        "pip install --upgrade pip",
        f"pip install {cpu} {torch}",
        *([] if pin_available else [f"pip install {cpu} torch"]),
        f"pip install {autograder}/source/package",
        f"grader validate GRADER_EXERCISES={autograder}/source/exercises",
    ]
    assert [c for c in calls.read_text().splitlines() if c != "python3 --version"] == expected
    assert pin_available or "no CPU wheel of" in done.stderr


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
    shutil.copy(LAB01 / "wrong" / "smallest_logits.py", autograder / "submission" / "starter.py")
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
    assert "your upload: no Python (.py) file to grade" in payload["output"]


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
