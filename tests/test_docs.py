"""Every recipe in docs/ is run by a test, as written.

A recipe is a fenced ``sh``, ``bash``, ``yaml``, ``dockerfile`` or ``json`` block. Each is either
run here (``RUN_HERE`` names the test that runs it, by the block's first line) or needs the GPU
machine (``ON_THE_GPU``, with what runs it there); a new block that is neither fails
``test_every_recipe_in_docs_is_run_by_a_test``.

What cannot run here is stood in for, and only that: GitHub's runner (each ``uses:`` is an
action of a known kind, emulated; ``run:`` steps run in bash as written, ``sudo apt-get`` only
checks that the package is installed), the network beyond PyPI (the course's repository is a
local clone of this one, at the tag the workflow names; torch comes from this environment,
which pip then finds already satisfied), and Docker (each ``RUN`` of the Dockerfile runs in
bubblewrap over this Debian 12 and Python 3.11, the same distribution and Python as its base
image, with the image's folders private to the build).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from support import LAB01, ROOT

DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(sh|bash|yaml|dockerfile|json)\n(.*?)^```$", re.S | re.M)
COURSE_REPO = "https://github.com/your-course/grader"

RUN_HERE = {
    ("lms.md", "export GRADER_SECRET_SEED=...   # the course's secret; use the same one for any later GPU batch"): "test_the_gradescope_build_recipe",
    ("lms.md", "name: Autograding"): "test_the_github_classroom_workflow_grades",
    ("lms.md", "# The grader, CPU torch and one course's labs, for PrairieLearn's external grading."): "test_the_prairielearn_image_grades",
    ("lms.md", '"externalGradingOptions": {'): "test_the_prairielearn_image_grades",
}
ON_THE_GPU = {
    ("lab-05-gpu.md", "python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\"):
        "the wheels the GPU scripts carry (benchmarks/gpu_common.sh installs them on the GPU machine)",
    ("lab-05-gpu.md", "bash benchmarks/gpu_session.sh selftest bench tune    # call 1: correctness, the bench, a tuning"):
        "the GPU session (benchmarks/gpu_session.sh), run on the GPU machine",
    ("lab-02-gpu.md", "# here, once (as for lab-05): the wheels the device image lacks, and Debian's bubblewrap"):
        "the lab-02 captures and capture check (benchmarks/lab02_gpu.sh), run on the GPU machine",
    ("lab-06-gpu.md", "bash benchmarks/lab06_gpu.sh calibrate ptx bench   # call 1 (estimated 5 minutes on an H100; cut at 480 s)"):
        "the lab-06 calibration and selftest (benchmarks/lab06_gpu.sh), run on the GPU machine",
}  # fmt: skip


def recipes() -> list[tuple[str, str, str]]:
    """(file, language, text) of every fenced recipe in docs/."""
    return [(path.name, lang, text) for path in sorted(DOCS.glob("*.md")) for lang, text in FENCE.findall(path.read_text())]


def recipe(file: str, first_line: str) -> str:
    found = [text for name, _, text in recipes() if name == file and text.splitlines()[0] == first_line]
    assert len(found) == 1, f"docs/{file} has {len(found)} recipes starting {first_line!r}"
    return found[0]


def test_every_recipe_in_docs_is_run_by_a_test() -> None:
    unclaimed = []
    for file, lang, text in recipes():
        key = (file, text.splitlines()[0])
        if key not in RUN_HERE and key not in ON_THE_GPU:
            unclaimed.append(f"docs/{file}: {lang} block starting {key[1]!r}")
    assert not unclaimed, "recipes no test runs (add one to tests/test_docs.py): " + "; ".join(unclaimed)
    for (file, first), test in RUN_HERE.items():
        recipe(file, first)
        assert test in globals(), test
    for (file, first), where in ON_THE_GPU.items():
        recipe(file, first)
        scripts = re.findall(r"benchmarks/[\w.]+", where)
        assert scripts and all((ROOT / script).is_file() for script in scripts), where


# --- stand-ins ------------------------------------------------------------------------------------


def _fresh_python(tmp: Path) -> Path:
    """A virtual environment that stands in for a fresh Python with pip: this environment's
    packages (torch, triton, the grader's dependencies) visible, no grader installed."""
    venv = tmp / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "packages-of-the-test.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = venv / "bin" / "pip"
    pip.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n")
    pip.chmod(0o755)
    return venv


def _shims(tmp: Path) -> Path:
    """sudo runs its command; apt-get install only checks that each package is installed."""
    bin_dir = tmp / "shims"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "apt-get").write_text(
        '#!/bin/sh\n[ "$1" = update ] && exit 0\n[ "$1" = install ] || { echo "apt-get: only install here" >&2; exit 100; }\n'
        'shift\nfor p in "$@"; do case "$p" in -*) ;; *) dpkg -s "$p" >/dev/null 2>&1 || { echo "apt-get: $p is not installed" >&2; exit 100; } ;; esac; done\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def _course_repository(tmp: Path, tag: str) -> Path:
    """This repository's working tree (its tracked files) as the course's grader repository, tagged ``tag``."""
    repo = tmp / "course-grader"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "course grader"], cwd=repo, check=True)
    subprocess.run([*git, "tag", tag], cwd=repo, check=True)
    return repo


def _env(python: Path, shims: Path, home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "LANG", "LC_")) or k in ("TMPDIR", "GRADER_REQUIRE_BWRAP")}
    return {**keep, "PATH": f"{shims}:{python / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home)}


# --- Gradescope ------------------------------------------------------------------------------------


def test_the_gradescope_build_recipe(tmp_path: Path) -> None:
    script = recipe("lms.md", "export GRADER_SECRET_SEED=...   # the course's secret; use the same one for any later GPU batch")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "gradescope-autograder-lab-01.zip").is_file()
    assert "gradescope-autograder-lab-01.zip: Gradescope autograder for lab-01-moe-routing" in proc.stdout


# --- GitHub Classroom ------------------------------------------------------------------------------


def run_workflow(text: str, workspace: Path, tmp: Path) -> dict[str, bool]:
    """Run the workflow's one job as GitHub's runner would: {step id: passed} of its command-grader steps."""
    job = next(iter(yaml.safe_load(text)["jobs"].values()))
    python = _fresh_python(tmp)
    env = _env(python, _shims(tmp), tmp / "home")
    github_env = tmp / "github_env"
    github_env.write_text("")
    env.update(GITHUB_ENV=str(github_env), GITHUB_WORKSPACE=str(workspace), CI="true")
    repos: dict[str, Path] = {}
    passed: dict[str, bool] = {}
    for step in job["steps"]:
        uses, given = step.get("uses", ""), step.get("with") or {}
        if uses == "actions/checkout@v4" and "repository" in given:
            url = f"https://github.com/{given['repository']}"
            assert url == COURSE_REPO, url
            repos.setdefault(url, _course_repository(tmp, given["ref"]))
            subprocess.run(["git", "clone", "-q", "--branch", given["ref"], str(repos[url]), str(workspace / given["path"])], check=True)
        elif uses == "actions/checkout@v4":
            assert (workspace / "starter.py").is_file()  # the student's repository, checked out already
        elif uses == "actions/setup-python@v5":
            assert str(given["python-version"]) == f"{sys.version_info.major}.{sys.version_info.minor}", given
        elif "run" in step:
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"step {step['run'][:60]!r}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        elif uses == "classroom-resources/autograding-command-grader@v1":
            proc = subprocess.run(["bash", "-c", given["command"]], cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode in (0, 1), f"{given['command']}: exit {proc.returncode}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            passed[step["id"]] = proc.returncode == 0
        elif uses == "classroom-resources/autograding-grading-reporter@v1":
            assert set(given["runners"].split(",")) <= set(passed), given
        elif uses == "mikepenz/action-junit-report@v4":
            ET.parse(workspace / given["report_paths"])
        else:
            pytest.fail(f"the workflow uses {uses!r}, which this test does not know how to run")
        for line in github_env.read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
    return passed


@pytest.mark.slow
def test_the_github_classroom_workflow_grades(tmp_path: Path) -> None:
    """A student's repository whose starter.py is done: both steps pass, junit.xml is there (the
    workflow as first written installed a package without labs: 'no labs found', exit 2)."""
    text = recipe("lms.md", "name: Autograding")
    workspace = tmp_path / "student-repo"
    workspace.mkdir()
    shutil.copy(LAB01 / "solution.py", workspace / "starter.py")
    assert run_workflow(text, workspace, tmp_path) == {"half": True, "full": True}
    cases = list(ET.parse(workspace / "reports" / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == 8 and {c.get("classname") for c in cases} == {"lab-01-moe-routing"}


# --- PrairieLearn ----------------------------------------------------------------------------------


def _in_image(image: Path, command: list[str], env: dict[str, str], extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as a container of the image would: this machine's system read-only, /tmp
    shared (where the test's files are), and the image's own folders (those its Dockerfile
    writes, kept in ``image``) at their paths, private to it."""
    argv = ["bwrap", "--tmpfs", "/"]
    for name in sorted(os.listdir("/")):
        path = Path("/") / name
        if name in ("proc", "dev", "tmp") or (image / name).exists():
            continue
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--bind", "/tmp", "/tmp", "--tmpfs", "/var/lib/apt/lists"]
    for folder in sorted(image.iterdir()):
        argv += ["--bind", str(folder), "/" + folder.name]
    argv += [*(extra or []), "--chdir", "/", "--", *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_prairielearn_image_grades(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("bwrap"):
        pytest.skip("building the image's folders at their paths needs root and bwrap")
    dockerfile = recipe("lms.md", "# The grader, CPU torch and one course's labs, for PrairieLearn's external grading.")
    python = _fresh_python(tmp_path)
    env = _env(python, _shims(tmp_path), tmp_path / "home")
    image = tmp_path / "image"
    (image / "grader").mkdir(parents=True)
    context = _course_repository(tmp_path, "v0.1.0")
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        if op == "FROM":  # this machine: Debian 12 (bookworm) with Python 3.11, as the image's base
            assert arg == f"python:{sys.version_info.major}.{sys.version_info.minor}-slim-bookworm", arg
            assert "bookworm" in Path("/etc/os-release").read_text()
        elif op == "COPY":
            *sources, dest = shlex.split(arg)
            for source in sources:
                target = image / dest.lstrip("/")
                if dest.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    target = target / Path(source).name
                target.parent.mkdir(parents=True, exist_ok=True)
                copy = shutil.copytree if (context / source).is_dir() else shutil.copy2
                copy(context / source, target)
        elif op == "ENV":
            key, _, value = arg.partition("=")
            env[key] = value
        elif op == "RUN":
            proc = _in_image(image, ["bash", "-e", "-c", arg], env)
            assert proc.returncode == 0, f"RUN {arg[:80]}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        else:
            pytest.fail(f"the Dockerfile uses {op}, which this test does not know how to build")
    assert not (image / "grader" / "exercises").stat().st_mode & 0o077  # the labs are root-only in the image

    # PrairieLearn's job: the upload in /grade/student, the question's options as printed
    options = json.loads("{" + recipe("lms.md", '"externalGradingOptions": {') + "}")["externalGradingOptions"]
    grade = tmp_path / "grade"
    (grade / "student").mkdir(parents=True)
    (grade / "results").mkdir()
    shutil.copy(LAB01 / "solution.py", grade / "student" / "moe.py")
    job_env = {**env, **options["environment"], "GRADER_SECRET_SEED": "course-secret"}
    proc = _in_image(image, shlex.split(options["entrypoint"]), job_env, ["--bind", str(grade), "/grade"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads((grade / "results" / "results.json").read_text())
    assert results["gradable"] is True and results["score"] >= 0.95, results.get("message")
