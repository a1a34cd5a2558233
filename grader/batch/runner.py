"""``grader batch``: grade a folder of submissions with N long-lived workers, resumably.

The batch process only schedules: it finds the submissions, skips those already graded, hands
one submission at a time to each of N batch workers (:mod:`grader.batch.worker`), records each
finished student, and writes the class summary at the end. A worker that dies (or falls silent
past the watchdog) is replaced; its submission is retried once, then recorded as an
infrastructure error for that student alone.

With a :class:`~grader.batch.shard.Shard` it grades only that shard's students and writes no
class outputs: several shards (Slurm array tasks) share one output folder, and
:func:`merge_batch` writes the class outputs once they are done, from every stored result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from grader.batch.layouts import Entry, Skipped, submissions_to_grade
from grader.batch.progress import Progress
from grader.batch.shard import Shard
from grader.batch.store import STATE, Store
from grader.batch.summary import write_class_outputs
from grader.errors import InfrastructureError, OutputError, UsageError
from grader.manifest import LabManifest
from grader.plugins import Plugins
from grader.results import GradeResult, SandboxInfo
from grader.sandbox.launchers import Launcher
from grader.seeds import Seeds
from grader.session import (
    Grader,
    GradingOptions,
    not_gradable,
    sandbox_info,
    write_reports,
)

ATTEMPTS = 2
"""A submission whose worker dies is graded at most this many times."""
START_FAILURES = 2
"""A slot whose worker dies this many times in a row before it is ready stops the batch."""


@dataclass
class BatchOptions:
    """What the batch grades and where; how each submission is graded is the GradingOptions."""

    folder: Path
    out: Path
    jobs: int = 2
    force: bool = False
    shard: Shard | None = None


@dataclass
class BatchOutcome:
    """What a batch produced: every current student's result, and what was skipped."""

    entries: list[Entry]
    skipped: list[Skipped]
    results: dict[str, GradeResult]
    graded: int = 0
    reused: int = 0
    retried: int = 0
    elapsed_s: float = 0.0
    sandbox: SandboxInfo | None = None
    missing: dict[str, str] = field(default_factory=dict)
    """Students with no current result (a merge's shards have not graded them), and why."""

    @property
    def not_gradable(self) -> list[str]:
        return [s for s, r in self.results.items() if not r.gradable]


@dataclass
class _Job:
    id: int
    entry: Entry
    attempts: int = 0


def silence_limit_s(manifest: LabManifest) -> float:
    """How long a worker may go without finishing a check before it counts as hung.

    Generous: a check makes several calls, each bounded by its own limit in the sandbox; this
    watchdog only catches a grader that hangs itself."""
    longest = max(
        [manifest.lab.time_limit_s, manifest.lab.import_time_limit_s]
        + [c.time_limit_s for c in manifest.checks.values() if c.time_limit_s]
    )
    return max(300.0, 20.0 * longest)


def worker_argv() -> list[str]:
    """The batch worker's command: Python isolated (-I), its import path given explicitly: this very
    grader package first, then PYTHONPATH and this process's path (a TA's plugins) without the
    current folder, so a ``grader/`` folder where the TA stands is never imported."""
    here = os.path.realpath(os.getcwd())
    path = [str(Path(__file__).resolve().parents[2])]
    for entry in [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]:
        entry = os.path.abspath(entry) if entry else ""
        if entry and os.path.realpath(entry) != here and entry not in path:
            path.append(entry)
    code = f"import sys; sys.path[:0] = {path!r}; from grader.batch.worker import main; sys.exit(main())"
    return [sys.executable, "-I", "-c", code]


class _Worker:
    """One batch worker process and the submission it is grading."""

    def __init__(self, slot: int, config: dict[str, Any], log: Path) -> None:
        self.slot = slot
        self.config = dict(config, options=dict(config["options"], slot=slot))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.ready = False
        self.job: _Job | None = None
        self.last_seen = 0.0
        self.start_failures = 0
        self.fd = -1

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                worker_argv(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buffer, self.ready, self.job = b"", False, None
        self.last_seen = time.monotonic()
        self.send(self.config)

    def send(self, message: dict[str, Any]) -> bool:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def read(self) -> list[dict[str, Any]] | None:
        """The complete messages available now; None once the worker closed its end."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        self.last_seen = time.monotonic()
        messages = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours: the worker's stdout only carries protocol lines
            if isinstance(message, dict):
                messages.append(message)
        return messages

    def kill(self) -> str:
        """Kill the worker (and anything in its session); how it ended, for messages."""
        assert self.proc is not None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = self.proc.wait()
        self.fd = -1
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""


class Interrupted(KeyboardInterrupt):
    """The batch was told to stop (SIGINT or SIGTERM); what was graded is kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the batch grades, SIGINT and SIGTERM sent to its process alone (``timeout -s INT``,
    ``kill``, a scheduler ending the job) stop it as Ctrl-C does: the workers are killed and every
    student graded so far stays recorded. SIGINT counts even where it was inherited ignored (a
    background job of a script): a signal sent to this very process is meant for it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _outcome(result: GradeResult) -> str:
    text = f"{result.score:g}/{result.max_score:g} ({result.percent:.0f}%)"
    return text if result.gradable else f"{text}, NOT GRADABLE: {result.error}"


def run_batch(
    plugins: Plugins,
    manifest: LabManifest,
    grading: GradingOptions,
    options: BatchOptions,
    stream: TextIO | None = None,
    tty: bool | None = None,
) -> BatchOutcome:
    """Grade every submission under ``options.folder``; returns every current student's result."""
    stream = stream or sys.stderr
    started = time.monotonic()
    seeds = Seeds.from_env(grading.seed)
    launcher = Grader(manifest, grading, plugins).launcher()
    entries, skipped = submissions_to_grade(options.folder, manifest, exclude=options.out)
    shard = options.shard.planned(options.out / STATE) if options.shard is not None else None
    if shard is not None:
        entries = [e for e in entries if shard.holds(e.student)]
    store = Store(options.out, manifest, seeds, shard, [e.student for e in entries])
    try:
        outcome = BatchOutcome(entries, skipped, {}, sandbox=sandbox_info(launcher))
        todo: deque[_Job] = deque()
        for i, entry in enumerate(entries):
            previous = None if options.force else store.done(entry.student, entry.sha256)
            if previous is not None:
                outcome.results[entry.student] = previous
                outcome.reused += 1
            else:
                todo.append(_Job(i, entry))
        _announce(options, launcher, seeds, outcome, stream)
        if todo:
            jobs = max(1, min(options.jobs, len(todo)))
            print(f"grader batch: grading {len(todo)} with {jobs} worker(s), sandbox {launcher.mode}", file=stream)
            progress = Progress(len(todo), stream, tty)
            with stop_on_signals():
                _Scheduler(plugins, manifest, launcher, seeds, store, grading, outcome, progress).run(todo, jobs)
        outcome.elapsed_s = time.monotonic() - started
        if shard is None:
            write_class_outputs(options.out, manifest, entries, outcome.skipped, outcome.results, outcome.elapsed_s)
    finally:
        store.close()
    return outcome


def merge_batch(manifest: LabManifest, grading: GradingOptions, options: BatchOptions) -> BatchOutcome:
    """Write the class outputs from the stored results of every submission in the folder.

    Grades nothing. A submission without a current result (its shard failed, has not run, or
    graded it with another seed, grader or lab) is listed in ``missing`` with the reason."""
    seeds = Seeds.from_env(grading.seed)
    entries, skipped = submissions_to_grade(options.folder, manifest, exclude=options.out)
    if not (options.out / STATE).is_dir():
        raise UsageError(f"{options.out}: nothing was graded there (no {STATE} folder); grade first, then merge")
    store = Store(options.out, manifest, seeds, wait=True)  # shards still writing: the merge comes after them
    try:
        outcome = BatchOutcome(entries, skipped, {})
        for entry in entries:
            result = store.stored(entry.student, entry.sha256)
            if result is None:
                outcome.missing[entry.student] = store.why_not(entry.student, entry.sha256)
            else:
                outcome.results[entry.student] = result
                outcome.reused += 1
        write_class_outputs(options.out, manifest, entries, skipped, outcome.results, None, outcome.missing)
    finally:
        store.close()
    return outcome




def _announce(options: BatchOptions, launcher: Launcher, seeds: Seeds, outcome: BatchOutcome, stream: TextIO) -> None:
    layouts = sorted({e.layout for e in outcome.entries})
    where = f"in {options.folder} ({', '.join(layouts)})" if layouts else f"in {options.folder}"
    n = len(outcome.entries)
    head = f"grader batch: {'' if options.shard is None else f'shard {options.shard}: '}{n} submission{'' if n == 1 else 's'} {where}"
    print(
        head
        + (f", {outcome.reused} already graded (skipped; --force redoes them)" if outcome.reused else "")
        + (f", {len(outcome.skipped)} entries skipped (reasons in summary.md)" if outcome.skipped and options.shard is None else ""),
        file=stream,
    )
    if not seeds.official:
        print(
            "grader batch: warning: GRADER_SECRET_SEED is not set: inputs come from the public seed only, which students "
            "can run themselves; to grade officially, export GRADER_SECRET_SEED (or GRADER_SECRET_SEED_FILE)",
            file=stream,
        )
    for warning in launcher.warnings:
        print(f"grader batch: warning: {warning}", file=stream)
    for entry in outcome.entries:
        if entry.warning:
            print(f"grader batch: WARNING: student {entry.student}: {entry.warning}", file=stream)


class _Scheduler:
    """Hands submissions to the workers, collects their answers, replaces the ones that die."""

    def __init__(
        self,
        plugins: Plugins,
        manifest: LabManifest,
        launcher: Launcher,
        seeds: Seeds,
        store: Store,
        grading: GradingOptions,
        outcome: BatchOutcome,
        progress: Progress,
    ) -> None:
        self.plugins, self.manifest, self.launcher, self.seeds = plugins, manifest, launcher, seeds
        self.store, self.outcome, self.progress = store, outcome, progress
        self.todo: deque[_Job] = deque()
        self.silence = silence_limit_s(manifest)
        # One GradingOptions for every worker, serialised once; the tier is the one chosen here.
        options = dataclasses.asdict(dataclasses.replace(grading, sandbox=launcher.mode))
        self.config = {"op": "config", "manifest": str(manifest.path.resolve()), "options": options, "parent": os.getpid()}
        self.workers: list[_Worker] = []
        self.by_fd: dict[int, _Worker] = {}

    # -- the loop ------------------------------------------------------------------------------

    def run(self, todo: deque[_Job], jobs: int) -> None:
        self.todo = todo
        self.workers = [_Worker(slot, self.config, self.store.log_path(slot)) for slot in range(jobs)]
        try:
            for worker in self.workers:
                self._start(worker)
            while self.todo or any(w.job is not None for w in self.workers):
                self._dispatch()
                readable, _, _ = select.select(list(self.by_fd), [], [], 0.2)
                for fd in readable:
                    worker = self.by_fd.get(fd)
                    if worker is None:
                        continue
                    messages = worker.read()
                    if messages is None:
                        self._died(worker, None)
                        continue
                    for message in messages:
                        self._handle(worker, message)
                self._watchdog()
                self.progress.draw()
        except BaseException:
            for worker in self.workers:  # interrupted or failed: stop at once, redo on the next run
                if worker.proc is not None:
                    worker.kill()
            raise
        finally:
            self.progress.close()
        for worker in self.workers:
            worker.stop()

    def _start(self, worker: _Worker) -> None:
        worker.start()
        self.by_fd[worker.fd] = worker

    def _dispatch(self) -> None:
        for worker in self.workers:
            if not (worker.ready and worker.job is None and self.todo):
                continue
            job = self.todo.popleft()
            worker.last_seen = time.monotonic()
            worker.job = job
            out_dir = self.store.student_dir(job.entry.student)
            message = {"op": "grade", "id": job.id, "file": job.entry.submission.to_wire(), "out": str(out_dir)}
            if worker.send(message):
                self.progress.started_one(worker.slot, job.entry.student)
            # A failed send means the worker is gone: its end of stdout closes and _died follows.

    def _watchdog(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.fd in self.by_fd and now - worker.last_seen > self.silence:
                self._died(worker, f"no progress for {self.silence:g} s")

    # -- answers -------------------------------------------------------------------------------

    def _handle(self, worker: _Worker, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            worker.ready, worker.start_failures = True, 0
            return
        if op == "fatal":
            raise InfrastructureError(f"the batch worker cannot grade: {message.get('error')}")
        job = worker.job
        if job is None or message.get("id") != job.id or op == "alive":
            return
        worker.job = None
        if op == "done":
            try:
                result = GradeResult.model_validate(message.get("result"))
            except ValueError as exc:
                self._failed(worker, job, f"its result could not be read ({exc})")
                return
            self._finish(worker, job, result)
        elif op == "write_failed":
            raise OutputError(f"{message.get('error')}; free space (or fix the folder) and run the same command again: "
                              "every student finished so far is kept")  # fmt: skip
        else:
            self._failed(worker, job, f"grader error: {message.get('error')}")

    def _finish(self, worker: _Worker, job: _Job, result: GradeResult) -> None:
        try:
            self.store.record(job.entry.student, job.entry.file, result, job.entry.people)
        except OSError as exc:
            raise OutputError(f"{self.store.out}: cannot write there ({exc.strerror or exc}); free space (or fix the "
                              "folder) and run the same command again: every student finished so far is kept") from None
        self.outcome.results[job.entry.student] = result
        self.outcome.graded += 1
        self.progress.finished_one(worker.slot, job.entry.student, _outcome(result), problem=not result.gradable)

    def _failed(self, worker: _Worker, job: _Job, how: str) -> None:
        job.attempts += 1
        if job.attempts < ATTEMPTS:
            self.outcome.retried += 1
            self.todo.appendleft(job)
            return
        reason = f"the grader's batch worker failed twice on this submission ({how}; log: {worker.log})"
        file = job.entry.submission
        result = not_gradable(self.manifest, file.name, file.sha256, reason, sandbox_info(self.launcher), self.seeds)
        write_reports(result, self.store.student_dir(job.entry.student), self.plugins)
        self._finish(worker, job, result)

    def _died(self, worker: _Worker, why: str | None) -> None:
        """The worker closed its channel (or hung): replace it, retry its submission once."""
        self.by_fd.pop(worker.fd, None)
        how = worker.kill()
        how = f"{why}, killed" if why else f"worker {how}"
        if not worker.ready:
            worker.start_failures += 1
            if worker.start_failures >= START_FAILURES:
                tail = worker.log_tail() or f"see {worker.log}"
                raise InfrastructureError(f"the batch worker cannot start ({how}): {tail}")
        job, worker.job = worker.job, None
        if job is not None:
            self._failed(worker, job, how)
        if self.todo or any(w.job is not None for w in self.workers):
            self._start(worker)
