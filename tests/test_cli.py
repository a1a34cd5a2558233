"""The command line as a user meets it: exit codes, files written, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import LAB01, ROOT, run_grader_process

from grader.errors import UsageError

RESULT_FIELDS = {
    "exercise", "submission", "submission_sha256", "score", "max_score", "gradable", "checks", "environment", "sandbox",
}  # fmt: skip
CHECK_FIELDS = {"id", "title", "function", "kind", "status", "score", "max_score", "message", "visibility", "duration_s"}


def test_submit_solution_full_marks_and_files(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli("submit", LAB01 / "solution.py", "--out", tmp_path)
    assert code == 0, err
    assert "Score: 10 / 10 (100%)" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert RESULT_FIELDS <= set(result)
    assert result["score"] == result["max_score"] == 10 and result["gradable"] is True
    for check in result["checks"]:
        assert CHECK_FIELDS <= set(check)
        assert check["status"] == "passed"
    assert {"grader", "python", "numpy", "torch", "triton", "gpu"} <= set(result["environment"])
    assert {"mode", "warnings"} <= set(result["sandbox"])
    assert (tmp_path / "scorecard.md").read_text().startswith("# lab-01-moe-routing: 10 / 10 (100%)")
    assert "<testsuite" in (tmp_path / "junit.xml").read_text()


def test_submit_starter_scores_zero_without_traceback(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli("submit", LAB01 / "starter.py", "--out", tmp_path)
    assert code == 0
    assert "Traceback" not in out + err
    assert "Score: 0 / 10 (0%)" in out
    assert "route is not implemented yet" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["score"] == 0 and {c["status"] for c in result["checks"]} == {"error"}
    hint = next(c["hint"] for c in result["checks"] if c["id"] == "route-matches-reference")
    assert hint and " ".join(f"Next: route-matches-reference: {hint}".split()) in " ".join(out.split())


def test_an_error_names_its_case_and_keeps_the_students_traceback(run_cli, tmp_path: Path) -> None:
    source = (LAB01 / "solution.py").read_text().replace(
        "    logits = x @ w_gate.T\n", "    logits = x @ w_gate.T\n    if x.shape[0] > 1:\n        raise ValueError('two tokens')\n"
    )
    (tmp_path / "moe.py").write_text(source)
    code, out, _ = run_cli("submit", tmp_path / "moe.py", "--out", tmp_path / "r")
    check = next(c for c in json.loads((tmp_path / "r" / "result.json").read_text())["checks"] if c["id"] == "route-matches-reference")
    assert check["status"] == "error" and check["message"].startswith("case ") and "ValueError: two tokens" in check["message"]
    assert 'File "your file"' in check["traceback"] and "raise ValueError('two tokens')" in check["traceback"]
    assert check["hint"] == ""  # a raise is not a wrong algorithm: no algorithm hint


def test_default_report_folder(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_cli("submit", LAB01 / "starter.py")
    assert code == 0
    assert (tmp_path / "reports" / "lab-01-moe-routing" / "starter" / "result.json").is_file()


def test_fail_under(run_cli, tmp_path: Path) -> None:
    assert run_cli("submit", LAB01 / "starter.py", "--out", tmp_path, "--fail-under", "50")[0] == 1
    assert run_cli("submit", LAB01 / "solution.py", "--out", tmp_path, "--fail-under", "100")[0] == 0


def test_lab_found_from_the_functions_the_file_defines(run_cli, tmp_path: Path) -> None:
    source = (LAB01 / "solution.py").read_text().replace('EXERCISE = "lab-01-moe-routing"', "")
    path = tmp_path / "mine.py"
    path.write_text(source)
    code, out, _ = run_cli("submit", path, "--out", tmp_path / "out", "-q")
    assert code == 0 and out.startswith("lab-01-moe-routing mine.py: 10/10")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "no/such/file.py"], "no/such/file.py: no such file"),
        (["submit", str(LAB01 / "solution.py"), "--exercise", "lab-99"], "unknown exercise 'lab-99'"),
        (["submit", str(LAB01 / "solution.py"), "--fail-under", "150"], "must be between 0 and 100"),
        (["submit", str(LAB01 / "solution.py"), "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["submit", str(LAB01)], "Python files and none is clearly the lab-01-moe-routing submission"),
        (["selftest", "lab-77"], "unknown exercise 'lab-77'"),
        (["selftest", "--exercise", "lab-77"], "unknown exercise 'lab-77'"),
        (["selftest", "lab-01", "-e", "lab-03"], "two labs named"),
        (["validate", "no/such/manifest.toml"], "no/such/manifest.toml: no such file or folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli, args: list[str], message: str) -> None:
    code, out, err = run_cli(*args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_file_for_no_lab(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "other.py"
    path.write_text("def unrelated():\n    pass\n")
    code, _, err = run_cli("submit", path)
    assert code == 2 and "cannot tell which lab this file is for" in err and "--exercise" in err


def test_ambiguous_prefix(run_cli, make_lab, lab01: Path) -> None:
    lab = make_lab()
    other = lab.parent / "lab-01-other"
    other.mkdir()
    (other / "manifest.toml").write_text((lab / "manifest.toml").read_text())
    code, _, err = run_cli("submit", lab01 / "solution.py", "--exercise", "lab-01")
    assert code == 2 and "ambiguous" in err and "lab-01-moe-routing" in err and "lab-01-other" in err


@pytest.mark.parametrize("exercise", ["LAB-01", "Lab-01-MoE", "01", "1", "lab1", "lab-1"])
def test_exercise_in_any_case_or_by_its_number(run_cli, tmp_path: Path, exercise: str) -> None:
    code, out, err = run_cli("submit", LAB01 / "starter.py", "--exercise", exercise, "--out", tmp_path, "-q")
    assert code == 0, err
    assert out.startswith("lab-01-moe-routing starter.py: 0/10")


def test_a_number_or_prefix_two_labs_share_is_ambiguous() -> None:
    from grader.discovery import resolve

    labs = {name: Path(name) for name in ("lab-01-a", "lab-10-b", "lab-11-c")}
    assert resolve("10", labs) == "lab-10-b" and resolve("LAB-11", labs) == "lab-11-c"
    assert resolve("01", labs) == "lab-01-a" and resolve("1", labs) == "lab-01-a"
    with pytest.raises(UsageError, match="ambiguous: lab-10-b, lab-11-c"):
        resolve("LAB-1", labs)
    with pytest.raises(UsageError, match="unknown exercise '7'"):
        resolve("7", labs)


def test_symlinked_submission_is_refused(run_cli, tmp_path: Path) -> None:
    link = tmp_path / "link.py"
    link.symlink_to(LAB01 / "solution.py")
    code, _, err = run_cli("submit", link)
    assert code == 2 and "symbolic link" in err


def test_invalid_manifest_exit_2(run_cli, make_lab) -> None:
    make_lab(edit=lambda t: t.replace("min_speedup = 4.0", "min_speedup = -1"))
    code, _, err = run_cli("submit", LAB01 / "solution.py", "--exercise", "lab-01")
    assert code == 2
    assert "checks.grouped-is-faster.min_speedup: expected a number > 1, received -1" in err


def test_validate_lists_every_error(run_cli, make_lab) -> None:
    lab = make_lab(edit=lambda t: t.replace("points = 2\ncases", "points = -2\ncases").replace("rtol = 1e-4", "rtol = []"))
    code, out, err = run_cli("validate", lab)
    assert code == 2
    lines = err.strip().splitlines()
    assert any("tolerances.default.rtol: expected a number, received []" in line for line in lines)
    assert any("checks.route-matches-reference.points: expected a number >= 0, received -2" in line for line in lines)
    assert lines[-1].startswith("grader: error:") and "problem(s)" in lines[-1]


def test_validate_ok_and_schema(run_cli) -> None:
    code, out, _ = run_cli("validate")
    assert code == 0 and "lab-01-moe-routing/manifest.toml: ok" in out
    code, out, _ = run_cli("validate", "--schema")
    assert code == 0 and json.loads(out)["title"] == "grader lab manifest"


def test_list_shows_functions_points_and_hardware(run_cli) -> None:
    code, out, _ = run_cli("list")
    assert code == 0
    assert "lab-01-moe-routing" in out and "[cpu]" in out and "10 points" in out
    assert "moe_forward_grouped(x, w_gate, w1s, w2s, k)  3 pts" in out


def test_infrastructure_failure_writes_ungradable_result_exit_3(run_cli, make_lab, tmp_path: Path) -> None:
    broken = (LAB01 / "solution.py").read_text().replace(
        "    return np.maximum(x @ w1, 0.0) @ w2", "    raise RuntimeError('reference broke')"
    )
    make_lab(files={"solution.py": broken})
    code, out, err = run_cli("submit", LAB01 / "solution.py", "--exercise", "lab-01", "--out", tmp_path)
    assert code == 3
    assert "not gradable" in err and "reference broke" in err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["gradable"] is False and "reference broke" in result["error"]


def test_official_grading_refuses_degraded_isolation(run_cli, tmp_path: Path, weak_process_tier) -> None:
    code, out, err = run_cli(
        "submit", LAB01 / "solution.py", "--official", "--sandbox", "process", "--out", tmp_path
    )
    assert code == 3
    assert "official grading needs the solutions, the secret seed and the network out of" in err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["gradable"] is False


def test_degraded_local_grading_warns_loudly(run_cli, tmp_path: Path, weak_process_tier) -> None:
    code, out, err = run_cli("submit", LAB01 / "solution.py", "--sandbox", "process", "--out", tmp_path)
    assert code == 0
    assert "DEGRADED ISOLATION" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["sandbox"]["degraded"] is True
    assert any("DEGRADED" in w for w in result["sandbox"]["warnings"])


def test_real_process_exit_codes(tmp_path: Path) -> None:
    """The installed entry point, as an LMS runs it: its own process, no traceback."""
    env = dict(os.environ, NO_COLOR="1")
    done = run_grader_process("submit", str(LAB01 / "starter.py"), "--out", str(tmp_path), cwd=ROOT, env=env)
    assert done.returncode == 0 and "Score: 0 / 10" in done.stdout
    done = run_grader_process("submit", str(tmp_path / "missing.py"), cwd=ROOT, env=env)
    assert done.returncode == 2 and done.stderr.strip() == f"grader: error: {tmp_path / 'missing.py'}: no such file"


def test_a_bad_out_is_bad_input_found_before_grading(run_cli, tmp_path: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("")
    code, out, err = run_cli("submit", LAB01 / "solution.py", "--out", a_file)
    assert code == 2 and "exists and is not a folder" in err and "Score" not in out
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere; the check above covers root
        code, out, err = run_cli("submit", LAB01 / "solution.py", "--out", locked / "deeper")
        assert code == 2 and "cannot write reports there" in err


def test_exercise_flag_contradicting_the_files_exercise_line_is_an_error(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli("submit", LAB01 / "solution.py", "--exercise", "lab-03", "--out", tmp_path)
    assert code == 2
    assert "solution.py declares EXERCISE = 'lab-01-moe-routing' but this is lab-03-tiled-gemm" in err
    code, _, _ = run_cli("submit", LAB01 / "solution.py", "--exercise", "lab-01", "--out", tmp_path)
    assert code == 0


def test_a_file_too_deep_to_parse_is_graded_not_a_crash(run_cli, tmp_path: Path) -> None:
    deep = tmp_path / "deep.py"
    deep.write_text("x = " + "(" * 100000 + ")" * 100000 + "\n")
    code, out, err = run_cli("submit", deep, "--out", tmp_path / "r")
    assert code == 2 and "cannot tell which lab" in err  # no EXERCISE line, no functions: bad input
    code, out, err = run_cli("submit", deep, "--exercise", "lab-01", "--out", tmp_path / "r")
    assert code == 0 and "Score: 0 / 10" in out
    assert json.loads((tmp_path / "r" / "result.json").read_text())["gradable"] is True


def test_a_file_name_that_is_not_utf8_gets_all_its_reports(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9-\xff.py")
    (tmp_path / name).write_bytes((LAB01 / "solution.py").read_bytes())
    done = run_grader_process("submit", os.path.join(str(tmp_path), name), "--out", str(tmp_path / "r"), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r" / "result.json").read_text(encoding="utf-8"))
    assert result["submission"] == "caf?-?.py" and result["score"] == 10
    assert (tmp_path / "r" / "scorecard.md").is_file() and (tmp_path / "r" / "junit.xml").is_file()


def test_list_into_a_closed_pipe_says_nothing(tmp_path: Path) -> None:
    import subprocess

    for _ in range(5):
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(os.sys.executable), "grader"), "list"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        assert proc.stderr.read() == b"" and proc.wait() == 0


def test_a_speed_check_failed_by_a_wrong_answer_gets_no_speed_hint(run_cli, tmp_path: Path) -> None:
    source = (LAB01 / "solution.py").read_text()
    source += "\n\ndef moe_forward_grouped(x, w_gate, w1s, w2s, k):\n    return np.zeros((x.shape[0], w2s.shape[2]))\n"
    (tmp_path / "moe.py").write_text(source)
    code, _, _ = run_cli("submit", tmp_path / "moe.py", "--out", tmp_path / "r")
    checks = {c["id"]: c for c in json.loads((tmp_path / "r" / "result.json").read_text())["checks"]}
    speed = checks["grouped-is-faster"]
    assert speed["status"] == "failed" and "a timed call gave a wrong answer" in speed["message"]
    assert speed["hint"].startswith("speed counts only for right answers")


def test_selftest_takes_the_lab_as_every_command_does(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import grader.selftest

    tested: list[str] = []
    monkeypatch.setattr(grader.selftest, "run_selftest", lambda manifest, *a, **k: tested.append(manifest.id) or True)
    for args in (["--exercise", "lab-04"], ["-e", "4"], ["lab-04"], ["lab-04", "--exercise", "lab-04"]):
        code, out, err = run_cli("selftest", *args)
        assert code == 0, err
    assert tested == ["lab-04-expert-load-balance"] * 4


# --- what a student reads -------------------------------------------------------------------------


def _checks(tmp_path: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((tmp_path / "r" / "result.json").read_text())["checks"]}


def test_a_syntax_error_names_its_line_once(run_cli, tmp_path: Path) -> None:
    (tmp_path / "syntax.py").write_text("import numpy as np\ndef route(x, w_gate, k)\n    return x\n")
    code, out, _ = run_cli("submit", tmp_path / "syntax.py", "-e", "lab-01", "--out", tmp_path / "r")
    message = _checks(tmp_path)["route-matches-reference"]["message"]
    assert code == 0 and message.endswith("SyntaxError: expected ':' (line 2)"), message
    assert "syntax.py" not in message


def test_a_notebooks_error_names_the_cell_and_its_line(run_cli, tmp_path: Path) -> None:
    import nbformat

    source = (LAB01 / "solution.py").read_text()
    broken = source.replace("    logits = x @ w_gate.T\n", "    logits = x @ w_gate.T\n    raise ValueError('looked at the logits')\n", 1)
    assert broken != source
    cells = [nbformat.v4.new_markdown_cell("# my routing"), nbformat.v4.new_code_cell("import numpy as np"),
             nbformat.v4.new_code_cell(broken)]  # fmt: skip
    (tmp_path / "moe.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook(cells=cells)))
    code, out, _ = run_cli("submit", tmp_path / "moe.ipynb", "-e", "lab-01", "--out", tmp_path / "r")
    line = broken.splitlines().index("    raise ValueError('looked at the logits')") + 1
    check = _checks(tmp_path)["route-matches-reference"]
    assert f"ValueError: looked at the logits (cell 3, line {line}, in route)" in check["message"], check["message"]
    assert f"cell 3, line {line}" in check["traceback"]


def test_a_utf16_file_is_said_to_be_no_utf8(run_cli, tmp_path: Path) -> None:
    (tmp_path / "moe.py").write_bytes((LAB01 / "solution.py").read_text().encode("utf-16"))
    code, out, _ = run_cli("submit", tmp_path / "moe.py", "-e", "lab-01", "--out", tmp_path / "r")
    message = _checks(tmp_path)["route-matches-reference"]["message"]
    assert code == 0 and message.endswith("the file is UTF-16 text, not UTF-8: save it as UTF-8"), message


def test_a_utf16_file_without_exercise_is_said_to_be_no_utf8(run_cli, tmp_path: Path) -> None:
    (tmp_path / "moe.py").write_bytes((LAB01 / "solution.py").read_text().encode("utf-16"))
    code, _, err = run_cli("submit", tmp_path / "moe.py", "--out", tmp_path / "r")
    assert code == 2 and "moe.py: the file is UTF-16 text, not UTF-8: save it as UTF-8" in err, err


def test_a_speed_check_failed_by_printing_says_printing_did_it(run_cli, tmp_path: Path) -> None:
    source = (LAB01 / "solution.py").read_text()
    source += (
        "\n\n_fast = moe_forward_grouped\n\ndef moe_forward_grouped(x, w_gate, w1s, w2s, k):\n"
        "    for t in range(x.shape[0]):\n        print('token', t, 'routed', flush=True)\n"
        "    import time\n    time.sleep(0.02)\n"  # slow for certain, whatever this machine's terminal pipe costs
        "    return _fast(x, w_gate, w1s, w2s, k)\n"
    )
    (tmp_path / "moe.py").write_text(source)
    run_cli("submit", tmp_path / "moe.py", "--out", tmp_path / "r")
    speed = _checks(tmp_path)["grouped-is-faster"]
    assert speed["status"] == "failed", speed["message"]
    assert speed["hint"].startswith("moe_forward_grouped printed ") and "remove the prints" in speed["hint"], speed["hint"]
    assert speed["details"]["printed_bytes"] >= 4096

