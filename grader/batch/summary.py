"""The class-level outputs of a batch: ``summary.md``, ``gradebook.csv`` and ``histogram.png``.

All three are rendered from the students' ``GradeResult``s (the same model every per-student
report comes from) and rewritten whole, atomically, at the end of every run.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path

from grader import __version__
from grader.atomic import write_atomic
from grader.batch.histogram import BINS, bins, write_histogram
from grader.batch.layouts import Entry, Skipped
from grader.errors import OutputError
from grader.manifest import LabManifest
from grader.reporters.markdown import cell, code
from grader.results import GradeResult, Status

TOP_MESSAGES = 3


LISTED = 50
"""At most this many rows per list in summary.md: a class folder can hold thousands of stray files."""


def _g(value: float) -> str:
    return f"{value:g}"


def _spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def gpu_models(results: Iterable[GradeResult]) -> Counter[str]:
    """How many gradable results each GPU model graded (results graded without a GPU left out)."""
    return Counter(r.environment.gpu for r in results if r.gradable and r.environment.gpu)


def gradebook_csv(
    manifest: LabManifest, entries: list[Entry], results: dict[str, GradeResult], missing: Collection[str] = ()
) -> str:
    """One row per student graded or ``missing``: the score, each check's score, where it was graded.

    A student not graded yet (``missing``: a merge whose shard did not grade them) or not gradable
    (the grader failed) has an empty score, never a 0 that an upload would take for a grade.
    ``other_gpu`` is ``yes`` for a score graded on another GPU model than most of the class's:
    timed checks on different models are not comparable."""
    check_ids = list(manifest.checks)
    models = gpu_models(results.values())
    usual = models.most_common(1)[0][0] if models else None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "file", "score", "max_score", "percent", "gradable", *check_ids, "node", "gpu", "other_gpu"])
    for entry in entries:
        result = results.get(entry.student)
        if result is None and entry.student not in missing:
            continue  # skipped since it was found (summary.md lists it)
        who = [_spreadsheet_safe(entry.student), _spreadsheet_safe(entry.file)]
        if result is None or not result.gradable:
            where = [_spreadsheet_safe(result.environment.node or ""), _spreadsheet_safe(result.environment.gpu or "")] if result else ["", ""]
            writer.writerow([*who, "", _g(manifest.max_score), "", "" if result is None else "no", *("" for _ in check_ids), *where, ""])
            continue
        by_id = {c.id: c.score for c in result.checks}
        gpu = result.environment.gpu
        writer.writerow(
            [
                *who, _g(result.score), _g(result.max_score), f"{result.percent:.1f}", "yes",
                *(_g(by_id[c]) if c in by_id else "" for c in check_ids),
                _spreadsheet_safe(result.environment.node or ""), _spreadsheet_safe(gpu or ""),
                "yes" if gpu and usual and gpu != usual else "",
            ]
        )  # fmt: skip
    return buffer.getvalue()


def tiers(results: Iterable[GradeResult]) -> Counter[str]:
    """How many gradable results each sandbox tier graded (``bubblewrap``, ``process (DEGRADED)``)."""
    return Counter(r.sandbox.mode + (" (DEGRADED)" if r.sandbox.degraded else "") for r in results if r.gradable)


def _pattern(message: str) -> str:
    """A message with its numbers blanked, so 'case 3 of 11' and 'case 7 of 11' group together."""
    first = message.strip().splitlines()[0] if message.strip() else "(no message)"
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", first)[:200]


def summary_md(
    manifest: LabManifest,
    entries: list[Entry],
    skipped: list[Skipped],
    results: dict[str, GradeResult],
    elapsed_s: float | None = None,
    histogram: str | None = "histogram.png",
    missing: dict[str, str] | None = None,
) -> str:
    missing = missing or {}
    graded = [(e, results[e.student]) for e in entries if e.student in results]
    gradable = [r for _, r in graded if r.gradable]
    percents = [r.percent for r in gradable]
    lines = [f"# {manifest.id}: class summary", ""]
    facts = [f"{len(graded) + len(missing)} submissions", f"{len(gradable)} graded"]
    if len(graded) > len(gradable):
        facts.append(f"**{len(graded) - len(gradable)} not gradable**")
    if missing:
        facts.append(f"**{len(missing)} not graded yet**")
    if skipped:
        facts.append(f"{len(skipped)} entries skipped")
    lines += [" · ".join(facts), ""]
    if gradable:
        scores = [r.score for r in gradable]
        mean = statistics.fmean(scores)
        lines += [
            f"Score out of {_g(manifest.max_score)}: mean **{mean:.2f}** ({100 * mean / manifest.max_score if manifest.max_score else 0:.0f}%), "
            f"median {_g(statistics.median(scores))}, min {_g(min(scores))}, max {_g(max(scores))}; "
            f"{sum(1 for r in gradable if r.score >= r.max_score)} with full marks.",
            "",
        ]
    example = (gradable or [r for _, r in graded] or [None])[0]
    if example is not None:
        secret = "with the secret part" if example.official else "public only: GRADER_SECRET_SEED was not set"
        used = tiers(gradable) or tiers([example.model_copy(update={"gradable": True})])
        sandbox = ", ".join(f"**{tier}**" + (f": {n}" if len(used) > 1 else "") for tier, n in used.most_common())
        lines += [
            f"Grader {__version__} · seed {example.seed}, {secret} · sandbox {sandbox}"
            + (f" · {elapsed_s:.1f} s this run" if elapsed_s is not None else ""),
            "",
        ]
        if len(used) > 1:
            lines += [
                f"**Warning: students were graded in {len(used)} sandbox tiers** (counts above; each "
                "`result.json` names its own in `sandbox.mode`): a node where bubblewrap did not work graded "
                "its share in a weaker tier. Require one (`grader slurm --require-tier bubblewrap`) and "
                "regrade with `--force`.",
                "",
            ]
    nodes = sorted({r.environment.node for r in gradable if r.environment.node})
    models = gpu_models(gradable)
    if len(models) > 1:
        usual, _ = models.most_common(1)[0]
        others = sum(n for m, n in models.items() if m != usual)
        listed = ", ".join(f"{m}: {n}" for m, n in models.most_common())
        lines += [
            f"**Warning: scores were graded on {len(models)} GPU models** ({listed}). Timed checks are not "
            f"comparable between models: the gradebook's `other_gpu` column marks the {others} not graded on "
            f"the {usual}. Pin one model (sbatch `--constraint`) and regrade those with `--force`.",
            "",
        ]
    elif models:
        lines += [f"GPU: {next(iter(models))} · graded on {len(nodes)} node{'' if len(nodes) == 1 else 's'}", ""]
    elif len(nodes) > 1:
        lines += [f"Graded on {len(nodes)} nodes: {', '.join(nodes[:8])}{' ...' if len(nodes) > 8 else ''}", ""]

    lines += ["## Score distribution", ""]
    if histogram:
        lines += [f"![score histogram]({histogram})", ""]
    counts = bins(percents)
    most = max(counts) or 1
    lines += ["Each band holds its lower bound; 100% is in the top band.", ""]
    lines += ["| score | students | |", "| --- | ---: | --- |"]
    width = 100 // BINS
    for i in reversed(range(BINS)):
        label = f"{i * width}–{(i + 1) * width}%"
        lines.append(f"| {label} | {counts[i]} | {'█' * round(20 * counts[i] / most)} |")
    lines.append("")

    lines += ["## Checks", "", "| check | points | passed | pass rate | failed | error | skipped |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    per_check: dict[str, Counter[Status]] = {cid: Counter() for cid in manifest.checks}
    messages: dict[str, Counter[str]] = {cid: Counter() for cid in manifest.checks}
    examples: dict[tuple[str, str], str] = {}
    for result in gradable:
        for c in result.checks:
            if c.id not in per_check:
                continue
            per_check[c.id][c.status] += 1
            if c.status is not Status.passed:
                key = _pattern(f"{c.status.value}: {c.message}")
                messages[c.id][key] += 1
                examples.setdefault((c.id, key), f"{c.status.value}: {c.message}")
    for cid, check in manifest.checks.items():
        n = per_check[cid]
        total = sum(n.values())
        rate = f"{100 * n[Status.passed] / total:.0f}%" if total else "–"
        lines.append(
            f"| `{cid}` | {_g(check.points)} | {n[Status.passed]} | {rate} | {n[Status.failed]} | {n[Status.error]} | {n[Status.skipped]} |"
        )
    lines.append("")

    failing = [cid for cid in manifest.checks if messages[cid]]
    if failing:
        lines += ["## Most common failure messages", ""]
        for cid in failing:
            missed = sum(messages[cid].values())
            lines += [f"### `{cid}`: {missed} of {len(gradable)} did not pass", "", "| students | message (one example) |", "| ---: | --- |"]
            for key, count in messages[cid].most_common(TOP_MESSAGES):
                lines.append(f"| {count} | {cell(examples[(cid, key)], 300)} |")
            lines.append("")

    broken = [(e, r) for e, r in graded if not r.gradable]
    if broken:
        lines += ["## Not gradable", "", "These are infrastructure failures, not the students' scores: re-run the batch to retry them.", ""]
        lines += ["| student | file | reason |", "| --- | --- | --- |"]
        lines += [f"| {cell(e.student)} | {code(e.file, in_table=True)} | {cell(r.error or '', 300)} |" for e, r in broken]
        lines.append("")
    if missing:
        lines += [
            "## Not graded yet",
            "",
            "No current result is stored for these: their shard failed, was cancelled or has not run. "
            "Grade them (`grader slurm ... --resubmit K` for the tasks that failed, or `grader batch` with the "
            "same --out), then merge again.",
            "",
            "| student | file | why |",
            "| --- | --- | --- |",
        ]
        files = {e.student: e.file for e in entries}
        lines += [f"| {cell(s)} | {code(files.get(s, ''), in_table=True)} | {cell(why, 300)} |" for s, why in missing.items()]
        lines.append("")
    warned = [e for e in entries if e.warning]
    if warned:
        lines += ["## Warnings", "", "Graded anyway; look at these.", "", "| student | warning |", "| --- | --- |"]
        lines += [f"| {cell(e.student)} | {cell(e.warning or '', 300)} |" for e in warned[:LISTED]]
        if len(warned) > LISTED:
            lines.append(f"| … | and {len(warned) - LISTED} more |")
        lines.append("")
    if skipped:
        lines += ["## Skipped entries", "", f"{len(skipped)} entries, not graded; nothing was run. "
                  "By reason (every entry is in `skipped.csv`):", "", "| reason | entries | e.g. |", "| --- | ---: | --- |"]  # fmt: skip
        by_reason: dict[str, list[str]] = {}
        for entry in skipped:
            by_reason.setdefault(entry.reason, []).append(entry.name)
        ordered = sorted(by_reason.items(), key=lambda item: -len(item[1]))
        for reason, names in ordered[:LISTED]:
            lines.append(f"| {cell(reason, 300)} | {len(names)} | {', '.join(code(n, 60, in_table=True) for n in names[:3])} |")
        if len(ordered) > LISTED:
            lines.append(f"| and {len(ordered) - LISTED} more reasons | {sum(len(n) for _, n in ordered[LISTED:])} | |")
        lines.append("")
    lines += ["Per-student reports: `<student>/result.json`, `scorecard.md`, `junit.xml` · gradebook: `gradebook.csv`", ""]
    return "\n".join(lines)


def write_class_outputs(
    out: Path,
    manifest: LabManifest,
    entries: list[Entry],
    skipped: list[Skipped],
    results: dict[str, GradeResult],
    elapsed_s: float | None = None,
    missing: dict[str, str] | None = None,
) -> None:
    try:
        _write_class_outputs(out, manifest, entries, skipped, results, elapsed_s, missing)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the class summary there ({exc.strerror or exc}); free space and run "
                          "`grader batch ... --merge-only` to write it from the stored results") from None


def _write_class_outputs(
    out: Path,
    manifest: LabManifest,
    entries: list[Entry],
    skipped: list[Skipped],
    results: dict[str, GradeResult],
    elapsed_s: float | None,
    missing: dict[str, str] | None,
) -> None:
    percents = [results[e.student].percent for e in entries if e.student in results and results[e.student].gradable]
    write_histogram(out / "histogram.png", percents, f"{manifest.id}: scores")
    write_atomic(out / "gradebook.csv", gradebook_csv(manifest, entries, results, missing or {}))
    write_atomic(out / "summary.md", summary_md(manifest, entries, skipped, results, elapsed_s, missing=missing))
    write_atomic(out / "skipped.csv", skipped_csv(skipped))


def skipped_csv(skipped: list[Skipped]) -> str:
    """Every entry that was not graded, and why (summary.md shows them grouped by reason)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["entry", "reason"])
    writer.writerows([s.name, s.reason] for s in skipped)
    return buffer.getvalue()
