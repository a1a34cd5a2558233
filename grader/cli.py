"""The ``grader`` command. Parses arguments, maps errors to exit codes, delegates the work.

Exit codes (SPEC.md): 0 graded; 1 graded but under --fail-under (or a self-test that did not
prove its checks); 2 bad input from the user, with a one-line reason; 3 the grader itself
failed, with the result file still written and marked not gradable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from grader import __version__, discovery
from grader.batch import slurm
from grader.errors import GraderError, ManifestError, UsageError
from grader.lms.container import describe_plan, points_plan
from grader.manifest import LabManifest, json_schema, load_manifest
from grader.plugins import default as default_plugins
from grader.reporters.terminal import TerminalReporter
from grader.session import DEBUG_ENV, GradingOptions, grade_file, internal_error

if TYPE_CHECKING:
    from grader.batch import BatchOutcome
    from grader.batch.shard import Shard


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _percent(text: str) -> float:
    value = float(text.rstrip("%"))
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value


def build_parser() -> Parser:
    parser = Parser(prog="grader", description="Grade GPU and ML-systems lab submissions.")
    parser.add_argument("--version", action="version", version=f"grader {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("submit", help="grade one file and write its reports")
    p.add_argument("file", type=Path)
    p.add_argument("--exercise", "-e", help="lab id or unambiguous prefix (default: from the file)")
    p.add_argument("--out", type=Path, help="report folder (default: reports/<lab-id>/<file stem>/)")
    p.add_argument("--seed", type=int, help="public seed of the inputs (default: the lab's fixed seed)")
    p.add_argument("--fail-under", type=_percent, metavar="PCT", help="exit 1 if the score is under PCT percent")
    _sandbox_flags(p)
    p.add_argument("--official", action="store_true", help="grade as an LMS would: full isolation required")
    p.add_argument("--deadline", type=_seconds, metavar="S", help="wall-clock limit of the whole grading (default: the lab's)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the score line")

    sub.add_parser("list", help="the labs, their functions, points and hardware needs")

    p = sub.add_parser("validate", help="validate manifests (all of them by default)")
    p.add_argument("paths", nargs="*", type=Path, help="manifest files or lab folders")
    p.add_argument("--schema", action="store_true", help="print the manifest JSON schema instead")

    p = sub.add_parser("selftest", help="prove a lab's checkers on its solution, starter and wrong files")
    p.add_argument("exercise", nargs="?", help="lab id or prefix (default: every lab)")
    p.add_argument("--exercise", "-e", dest="exercise_flag", metavar="ID", help="the same, as the other commands take it")
    p.add_argument("--out", type=Path, help="also write each graded file's reports under DIR/<lab-id>/<file>/")
    _sandbox_flags(p)

    p = sub.add_parser("batch", help="grade every submission in a folder (TA mode): reports, summary, gradebook")
    p.add_argument("folder", type=Path, help="plain .py files, a folder per student, or a Gradescope or Canvas export")
    p.add_argument("--exercise", "-e", required=True, help="lab id or unambiguous prefix")
    p.add_argument("--jobs", "-j", type=_positive, default=os.cpu_count() or 1, help="submissions graded at once (default: one per core)")
    p.add_argument("--out", type=Path, help="output folder (default: reports/<lab-id>/batch-<folder name>/)")
    p.add_argument("--force", action="store_true", help="regrade everyone, even those already graded")
    p.add_argument("--seed", type=int, help="public seed of the inputs (default: the lab's fixed seed)")
    p.add_argument("--fail-under", type=_percent, metavar="PCT", help="exit 1 if any submission scores under PCT percent")
    p.add_argument("--deadline", type=_seconds, metavar="S", help="wall-clock limit of each grading (default: the lab's)")
    p.add_argument(
        "--shard", metavar="K/N", help="grade only shard K of N (students split by a hash of their name); no class outputs"
    )
    p.add_argument(
        "--merge-only", action="store_true",
        help="grade nothing: write summary.md, gradebook.csv and histogram.png from the results stored in --out",
    )  # fmt: skip
    _sandbox_flags(p)

    p = sub.add_parser("slurm", help="grade a folder as a Slurm job array, then merge (writes, prints or submits the scripts)")
    slurm.add_arguments(p)

    p = sub.add_parser("lms", help="LMS integrations: the Gradescope autograder, grading in LMS containers")
    platforms = p.add_subparsers(dest="platform", metavar="PLATFORM", parser_class=Parser)
    gradescope = platforms.add_parser("gradescope", help="Gradescope: build the autograder zip; grade inside it")
    actions = gradescope.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    p = actions.add_parser("build", help="write the autograder zip to upload to Gradescope")
    p.add_argument("--exercise", "-e", required=True, help="lab id or unambiguous prefix")
    p.add_argument("--out", type=Path, help="the zip (default: gradescope-autograder-<lab-id>.zip)")
    p.add_argument("--torch", help="pip requirement for the CPU torch build (default: this grader's torch version)")
    p.add_argument("--secret-seed", help="secret mixed into every input (default: $GRADER_SECRET_SEED, else a random one)")
    p.add_argument("--timeout", type=_positive, default=540, help="seconds before run_autograder stops the grader (default 540)")
    p.add_argument("--allow-unsandboxed", action="store_true", help="grade even where no tier keeps solutions, secret and network out of reach (degraded, said in every result)")
    p = actions.add_parser("run", help="grade the upload inside Gradescope's container (run_autograder calls this)")
    _container_flags(p, "AUTOGRADER_ROOT", "/autograder")
    _scores_parser(actions)
    prairielearn = platforms.add_parser("prairielearn", help="PrairieLearn external grading")
    actions = prairielearn.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    p = actions.add_parser("run", help="grade /grade/student/ and write /grade/results/results.json")
    _container_flags(p, "GRADE_ROOT", "/grade")
    p = _scores_parser(actions)
    p.add_argument("--qid", help="the question's id in PrairieLearn (required)")
    p.add_argument("--instance", type=_positive, default=1, help="the assessment instance (default 1)")
    p = actions.add_parser("config", help="print the question's externalGradingOptions and points for a lab")
    p.add_argument("--exercise", "-e", required=True, help="lab id or unambiguous prefix")
    p.add_argument("--timeout", type=_positive, default=30, help="the job's timeout in seconds (PrairieLearn's default: 30)")
    p.add_argument("--image", default="your-course/grader:latest", help="the grader's container image")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _scores_parser(actions: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = actions.add_parser("scores", help="the points graded later (GPU, hidden) from a batch folder, as the LMS's upload CSV")
    p.add_argument("folder", type=Path, help="the --out folder of grader batch (or grader slurm) on a GPU machine")
    p.add_argument("--exercise", "-e", required=True, help="lab id or unambiguous prefix")
    p.add_argument("--out", type=Path, help="write the CSV here (default: standard output)")
    return p


def _container_flags(p: argparse.ArgumentParser, env: str, default: str) -> None:
    p.add_argument("--exercise", "-e", help="lab id or prefix (default: the only lab, else from the file)")
    p.add_argument(
        "--root", type=Path, default=Path(os.environ.get(env) or default), help=f"the container's root (default: ${env} or {default})"
    )
    p.add_argument("--seed", type=int, help="public seed of the inputs (default: the lab's fixed seed)")
    _sandbox_flags(p)


def _sandbox_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sandbox",
        choices=["auto", "bubblewrap", "process"],
        default="auto",
        help="isolation tier (default: the strongest that starts here)",
    )
    p.add_argument(
        "--allow-unsandboxed", action="store_true", help="let official grading run in a tier that leaves solutions, secret or network within reach (degraded, said in every result)"
    )


# --- commands ------------------------------------------------------------------------------------


def _labs() -> dict[str, Path]:
    labs = discovery.find_labs()
    if not labs:
        raise UsageError(f"no labs found under {discovery.exercises_root()} (set {discovery.EXERCISES_ENV})")
    return labs


def _options(args: argparse.Namespace, official: bool) -> GradingOptions:
    return GradingOptions(
        seed=getattr(args, "seed", None),
        sandbox=args.sandbox,
        official=official,
        allow_unsandboxed=args.allow_unsandboxed,
        deadline_s=getattr(args, "deadline", None),
    )


def cmd_submit(args: argparse.Namespace) -> int:
    plugins = default_plugins()
    file = discovery.read_submission(args.file)
    labs = _labs()
    if args.exercise:
        lab_id = discovery.lab_for_file(file.text, args.exercise, labs, {})
    else:
        manifests, _ = discovery.load_all(labs, plugins.checkers())
        lab_id = discovery.lab_for_file(file.text, None, labs, manifests)
    manifest = load_manifest(labs[lab_id], plugins.checkers())
    out = args.out or Path("reports") / lab_id / discovery.safe_stem(file.name)
    result = grade_file(file, manifest, _options(args, args.official), out, plugins)
    if args.quiet:
        print(f"{result.exercise} {result.submission}: {result.score:g}/{result.max_score:g} ({result.percent:.0f}%)")
    else:
        sys.stdout.write(TerminalReporter().render(result, out))
    if not result.gradable:
        print(f"grader: error: not gradable: {result.error}", file=sys.stderr)
        return 3
    if args.fail_under is not None and result.percent < args.fail_under:
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    plugins = default_plugins()
    labs = _labs()
    manifests, broken = discovery.load_all(labs, plugins.checkers())
    for lab_id in labs:
        if lab_id in broken:
            print(f"{lab_id}  (invalid manifest: {broken[lab_id]})")
            continue
        m = manifests[lab_id]
        print(f"{lab_id}  {m.lab.title}  [{m.lab.hardware.value}]  {m.max_score:g} points")
        for fname, spec in m.functions.items():
            gpu = any(c.requires.value == "gpu" for c in m.checks.values() if c.function == fname)
            print(f"    {fname}{spec.signature}  {m.function_points(fname):g} pts{'  (GPU checks)' if gpu else ''}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    plugins = default_plugins()
    if args.schema:
        print(json.dumps(json_schema(plugins.checkers()), indent=2))
        return 0
    paths = args.paths or list(_labs().values())
    problems = 0
    for path in paths:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file or folder")
        try:
            manifest = load_manifest(path, plugins.checkers(), strict=True)
        except ManifestError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            problems += len(exc.problems)
            continue
        print(f"{manifest.path}: ok ({len(manifest.checks)} checks, {manifest.max_score:g} points)")
    if problems:
        print(f"grader: error: {problems} problem(s) in manifests", file=sys.stderr)
        return 2
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from grader.selftest import run_selftest

    plugins = default_plugins()
    labs = _labs()
    if args.exercise and args.exercise_flag and args.exercise != args.exercise_flag:
        raise UsageError(f"two labs named: {args.exercise!r} and --exercise {args.exercise_flag!r}; name one")
    exercise = args.exercise_flag or args.exercise
    ids = [discovery.resolve(exercise, labs)] if exercise else list(labs)
    ok = True
    for lab_id in ids:
        manifest: LabManifest = load_manifest(labs[lab_id], plugins.checkers())
        ok &= run_selftest(manifest, _options(args, official=False), plugins, out=sys.stdout, reports=args.out)
    return 0 if ok else 1


def _manifest(exercise: str) -> LabManifest:
    """The lab an --exercise names (an id or an unambiguous prefix), loaded and validated."""
    labs = _labs()
    return load_manifest(labs[discovery.resolve(exercise, labs)], default_plugins().checkers())


def _batch_out(args: argparse.Namespace, lab_id: str) -> Path:
    return args.out or Path("reports") / lab_id / f"batch-{args.folder.resolve().name}"


def cmd_batch(args: argparse.Namespace) -> int:
    from grader.batch import BatchOptions, merge_batch, run_batch
    from grader.batch.shard import Shard

    plugins = default_plugins()
    manifest = _manifest(args.exercise)
    lab_id = manifest.id
    if not args.folder.is_dir():
        raise UsageError(f"{args.folder}: no such folder")
    shard = Shard.parse(args.shard) if args.shard else None
    if args.merge_only and (shard or args.force):
        raise UsageError("--merge-only grades nothing: it takes no --shard or --force")
    out = _batch_out(args, lab_id)
    options = BatchOptions(
        args.folder, out, args.jobs, args.force, args.seed, args.allow_unsandboxed, args.deadline, shard=shard
    )
    if args.merge_only:
        return _report_batch(lab_id, out, merge_batch(manifest, options), args.fail_under, merged=True)
    try:
        outcome = run_batch(plugins, manifest, _options(args, official=True), options)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGINT/SIGTERM to this process (batch.runner.stop_on_signals)
        print(f"grader: interrupted; run the same command again to resume (finished students are kept in {out})", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    return _report_batch(lab_id, out, outcome, args.fail_under, shard=shard)


def _report_batch(
    lab_id: str, out: Path, outcome: BatchOutcome, fail_under: float | None, shard: Shard | None = None, merged: bool = False
) -> int:
    graded = [r for r in outcome.results.values() if r.gradable]
    rate = ""
    if outcome.graded and outcome.elapsed_s:
        per_second = outcome.graded / outcome.elapsed_s
        rate = f" ({per_second:.1f}/s)" if per_second >= 1 else f" ({outcome.elapsed_s / outcome.graded:.1f} s each)"
    mean = sum(r.percent for r in graded) / len(graded) if graded else 0.0
    who = f"{lab_id} shard {shard}" if shard else lab_id
    n = len(outcome.results)
    done = f"merged {outcome.reused} stored results" if merged else f"{outcome.graded} graded now in {outcome.elapsed_s:.1f} s{rate}, {outcome.reused} already graded"
    print(
        f"{who}: {n} student{'' if n == 1 else 's'}, {done}; mean {mean:.0f}%"
        + (f"; {outcome.retried} retried after a batch worker died" if outcome.retried else "")
        + (f"; {len(outcome.not_gradable)} NOT GRADABLE" if outcome.not_gradable else "")
        + (f"; {len(outcome.missing)} NOT GRADED YET" if outcome.missing else "")
        + (f"; {len(outcome.skipped)} entries skipped" if outcome.skipped and not shard else "")
    )
    if shard:
        print(f"Reports: {out}/<student>/ (the class outputs come from: grader batch ... --out {out} --merge-only)")
    else:
        print(f"Reports: {out}/ (summary.md, gradebook.csv, histogram.png, <student>/)")
    if outcome.not_gradable:
        print(f"grader: error: {len(outcome.not_gradable)} submission(s) not gradable: {', '.join(outcome.not_gradable[:5])}", file=sys.stderr)
    if outcome.missing:
        names = ", ".join(list(outcome.missing)[:5]) + (" ..." if len(outcome.missing) > 5 else "")
        print(
            f"grader: error: {len(outcome.missing)} submission(s) not graded yet ({names}); summary.md says why; "
            "grade them (grader slurm ... --resubmit K for the tasks that failed, or grader batch with this --out), then merge again",
            file=sys.stderr,
        )
    if outcome.not_gradable or outcome.missing:
        return 3
    if fail_under is not None and any(r.percent < fail_under for r in graded):
        return 1
    return 0


def cmd_slurm(args: argparse.Namespace) -> int:
    manifest = _manifest(args.exercise)
    if not args.folder.is_dir():
        raise UsageError(f"{args.folder}: no such folder")
    return slurm.command(args, manifest, _batch_out(args, manifest.id), discovery.exercises_root())


def cmd_lms(args: argparse.Namespace) -> int:
    if args.platform is None or args.action is None:
        raise UsageError("name a platform and an action, e.g. grader lms gradescope build --exercise lab-01")
    if args.action == "build":
        return _gradescope_build(args)
    if args.action == "config":
        return _prairielearn_config(args)
    if args.action == "scores":
        return _scores(args)
    from grader.lms.container import run_container

    return run_container(args.platform, args.root, args.exercise, _options(args, official=True))


def _gradescope_build(args: argparse.Namespace) -> int:
    from grader.lms.gradescope import build_autograder

    manifest = _manifest(args.exercise)
    lab_id = manifest.id
    out = args.out or Path(f"gradescope-autograder-{lab_id}.zip")
    secret = args.secret_seed or os.environ.get("GRADER_SECRET_SEED") or None
    try:
        build_autograder(manifest, out, args.torch, secret, args.timeout, args.allow_unsandboxed)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"{out}: Gradescope autograder for {lab_id} (upload it under Configure Autograder > Zip file upload)")
    for line in describe_plan(manifest, "gradescope"):
        print(line)
    if not secret:
        print("note: the zip holds a random secret seed; build with --secret-seed (or $GRADER_SECRET_SEED) to grade "
              "deferred checks later on the same inputs students were graded on")  # fmt: skip
    return 0


def _scores(args: argparse.Namespace) -> int:
    from grader.atomic import write_atomic
    from grader.batch.scores import score_rows, to_csv

    manifest = _manifest(args.exercise)
    if args.platform == "prairielearn" and not args.qid:
        raise UsageError("name the question: --qid (its id in PrairieLearn)")
    rows = score_rows(args.folder, manifest, args.platform, getattr(args, "qid", "") or "", getattr(args, "instance", 1))
    text = to_csv(rows)
    if args.out:
        write_atomic(args.out, text)
        print(f"{args.out}: {len(rows.rows) - 1} row(s) of deferred points for {manifest.id}")
    else:
        sys.stdout.write(text)
    for student, why in rows.left_out.items():
        print(f"grader: left out {student}: {why}", file=sys.stderr)
    return 3 if rows.left_out else 0


def _prairielearn_config(args: argparse.Namespace) -> int:
    manifest = _manifest(args.exercise)
    plan = points_plan(manifest, "prairielearn")
    auto = sum(manifest.checks[c].points for c in plan["upload"])
    manual = manifest.max_score - auto
    options = {
        "enabled": True,
        "image": args.image,
        "entrypoint": f"grader lms prairielearn run --exercise {manifest.id}",
        "timeout": args.timeout,
        "environment": {"GRADER_EXERCISES": "/grader/exercises", "GRADER_LMS_TIMEOUT_S": str(args.timeout)},
    }
    print("question info.json:")
    print(json.dumps({"externalGradingOptions": options}, indent=2))
    print("assessment question entry:")
    print(json.dumps({"id": "<your question id>", "autoPoints": auto, **({"manualPoints": manual} if manual else {})}))
    for line in describe_plan(manifest, "prairielearn"):
        print(line)
    print('Add the course\'s secret to "environment" as "GRADER_SECRET_SEED" (info.json is never served to students); '
          "never put it in the image or in clientFiles (docs/lms.md)")
    return 0


COMMANDS = {
    "submit": cmd_submit,
    "list": cmd_list,
    "validate": cmd_validate,
    "selftest": cmd_selftest,
    "batch": cmd_batch,
    "slurm": cmd_slurm,
    "lms": cmd_lms,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a reader that went away is a BrokenPipeError here
        return code
    except GraderError as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"grader: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("grader: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `grader list | head -2`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the grader's own bug: say so in one line, keep the trace for debugging
        print(f"grader: {internal_error(exc)} (set {DEBUG_ENV}=1 for details)", file=sys.stderr)
        return 3
