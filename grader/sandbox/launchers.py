"""How a worker process is started: the isolation tiers and the probe that picks one.

* ``bubblewrap``: the full sandbox of sandbox.md section 4.3. Private mount, pid, network, IPC
  and UTS namespaces; only the interpreter, its packages, the worker and the submission are
  visible, read-only; a size-capped private /tmp; no capabilities; a non-root uid; seccomp;
  resource limits; a cleared environment.
* ``process`` (degraded): a plain child process with the same limits, uid drop (when root),
  seccomp and cleared environment, in a private network and pid namespace where ``unshare``
  allows; it can see the file system. Used only when bwrap cannot start, and always said so.

The probe runs the real command line of a tier with ``python -c pass``; the first tier that
starts wins. Nothing falls back silently: the chosen tier's warnings go into every result.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.sandbox import seccomp
from grader.sandbox.uids import UidLease

BOOT_DIR = Path(__file__).parent / "boot"
SANDBOX_BOOT = "/boot"
SANDBOX_SUB = "/sub"
SLOT_UID_BASE = 61000


@dataclass(frozen=True)
class Limits:
    """Resource limits for one worker (sandbox.md section 2.4)."""

    address_space_mb: int | None = 4096
    cpu_s: int = 120
    nproc: int = 64
    fsize_mb: int = 64
    nofile: int = 256
    tmp_mb: int = 256

    def prlimit_args(self) -> list[str]:
        args = [
            f"--cpu={self.cpu_s}",
            f"--nproc={self.nproc}",
            f"--fsize={self.fsize_mb << 20}",
            f"--nofile={self.nofile}",
            "--core=0",
        ]
        if self.address_space_mb:
            args.insert(0, f"--as={self.address_space_mb << 20}")
        return [shutil.which("prlimit") or "prlimit", *args, "--"]


@dataclass
class WorkerCommand:
    """What a launcher produces: the argv, the environment, and the fds to pass."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    submission_path: str
    seccomp: bytes | None
    """A filter the worker installs itself (the tiers where no bwrap installs one)."""
    uid: int | None = None
    """The uid the worker runs as, when it is its own: every process of it is killed afterwards."""


@dataclass
class Launcher:
    """One isolation tier."""

    mode: str
    degraded: bool
    warnings: list[str] = field(default_factory=list)
    uid: int | None = None
    gpu: bool = False

    # -- building the command ---------------------------------------------------------------

    def command(
        self,
        python: str,
        submission: Path,
        fds: tuple[int, int],
        env: dict[str, str],
        limits: Limits,
        uid: int | None = None,
    ) -> WorkerCommand:
        """The command line of one worker; ``uid`` (leased by the caller) replaces the tier's base uid."""
        uid = None if self.uid is None else (uid if uid is not None else self.uid)
        if self.mode == "bubblewrap":
            return self._bwrap(python, submission, fds, env, limits, uid)
        return self._process(python, submission, fds, env, limits, uid)

    def _worker_argv(self, python: str, boot: str, fds: tuple[int, int]) -> list[str]:
        return [python, "-I", "-B", f"{boot}/worker.py", str(fds[0]), str(fds[1])]

    def _setpriv(self, uid: int | None) -> list[str]:
        if uid is None:
            return []
        return [
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--",
        ]  # fmt: skip

    def _bwrap(
        self, python: str, submission: Path, fds: tuple[int, int], env: dict[str, str], limits: Limits, uid: int | None
    ) -> WorkerCommand:
        bpf_r = _seccomp_fd(deny_ip_sockets=False)
        argv = [*limits.prlimit_args(), shutil.which("bwrap") or "bwrap"]
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if os.geteuid() != 0:
            argv += ["--unshare-user"]
        argv += ["--die-with-parent", "--new-session", "--clearenv"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
            if os.path.islink(name):
                argv += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                argv += ["--ro-bind", name, name]
        argv += ["--perms", "0755", "--dir", "/etc"]
        for name in ("ld.so.cache", "nsswitch.conf", "localtime"):
            if os.path.exists(f"/etc/{name}"):
                argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        # The worker's uid gets a passwd and group entry: libraries (torch's profiler among them)
        # look the current user up and fail on an unknown uid.
        data_fds = []
        for name, extra in (("passwd", f"grader:x:{uid}:{uid}:grader worker:/tmp:/usr/sbin/nologin\n"),
                            ("group", f"grader:x:{uid}:\n")):  # fmt: skip
            fd = _data_fd(_etc_text(name) + (extra if uid is not None else ""))
            data_fds.append(fd)
            argv += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
        # The private /tmp comes before the interpreter's binds: a venv under /tmp must stay visible.
        argv += ["--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
        made: set[str] = {"/", "/usr", "/etc", "/tmp"}
        for root in _python_roots(python):
            argv += _parents(root, made)
            argv += ["--ro-bind", root, root]
        argv += ["--ro-bind", str(BOOT_DIR), SANDBOX_BOOT]
        argv += ["--ro-bind", str(submission.parent), SANDBOX_SUB]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        if self.gpu:
            devices, visible = gpu_devices(env)
            for dev in devices:
                argv += ["--dev-bind", dev, dev]
            if visible is not None:
                argv += ["--setenv", "CUDA_VISIBLE_DEVICES", visible]
        argv += ["--perms", "1777", "--size", str(64 << 20), "--tmpfs", "/dev/shm"]
        argv += ["--chdir", "/tmp", "--seccomp", str(bpf_r)]
        if os.geteuid() == 0:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        argv += self._setpriv(uid)
        argv += self._worker_argv(python, SANDBOX_BOOT, fds)
        return WorkerCommand(
            argv, {"PATH": "/usr/bin:/bin"}, (*fds, bpf_r, *data_fds), f"{SANDBOX_SUB}/{submission.name}", None, uid
        )

    def _process(
        self, python: str, submission: Path, fds: tuple[int, int], env: dict[str, str], limits: Limits, uid: int | None
    ) -> WorkerCommand:
        argv = [*limits.prlimit_args()]
        if self.mode == "process+unshare":
            argv += [shutil.which("unshare") or "unshare", "--net", "--ipc", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
        argv += self._setpriv(uid)
        argv += self._worker_argv(python, str(BOOT_DIR), fds)
        program = seccomp_program(deny_ip_sockets=self.mode == "process")
        return WorkerCommand(argv, dict(env), fds, str(submission), program, uid)


DEV = "/dev"
NVIDIA_GPU_FILE = re.compile(r"^nvidia(\d+)$")
"""The name of one GPU's device file (``nvidia3``), as opposed to the control files."""


def gpu_devices(env: Mapping[str, str], dev: str | None = None) -> tuple[list[str], str | None]:
    """The NVIDIA device files a GPU worker gets, and the CUDA_VISIBLE_DEVICES it then sees.

    Only the allocated GPUs: ``CUDA_VISIBLE_DEVICES`` (Slurm sets it to the GPUs it allocated)
    names them, and each is mapped to its ``/dev/nvidiaN`` through nvidia-smi's minor numbers
    (an index counts among the GPUs this process can see, as CUDA's does); without nvidia-smi
    an index is taken as the minor number, which is what a gres.conf ``File=/dev/nvidia[0-N]``
    gives when cgroups do not renumber. In the sandbox the unbound GPUs do not exist, so the
    allocated ones are renumbered from 0. The control files (nvidiactl, nvidia-uvm, ...) are
    always bound. Without the variable, or with entries that cannot be mapped (MIG instances,
    UUIDs without nvidia-smi), every GPU is bound and the variable passes through unchanged.
    """
    found = sorted(glob.glob(os.path.join(dev or DEV, "nvidia*")))
    per_gpu = {int(m[1]): path for path in found if (m := NVIDIA_GPU_FILE.match(os.path.basename(path)))}
    control = [path for path in found if not NVIDIA_GPU_FILE.match(os.path.basename(path))]
    every = control + [per_gpu[n] for n in sorted(per_gpu)]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return every, None
    minors: list[int] = []
    for entry in (e.strip() for e in visible.split(",")):
        if not entry or entry.startswith("-"):
            break  # CUDA stops reading the list at the first entry that names no device
        minor = _minor(entry)
        if minor is None:
            return every, visible
        if minor in per_gpu and minor not in minors:
            minors.append(minor)
    return control + [per_gpu[n] for n in minors], ",".join(str(i) for i in range(len(minors)))


def _minor(entry: str) -> int | None:
    """The minor number of the GPU a CUDA_VISIBLE_DEVICES entry names, or None if unknown."""
    rows = _smi_gpus()
    if rows:
        for index, uuid, minor in rows:
            if entry == index or (entry.startswith("GPU-") and uuid.startswith(entry)):
                return int(minor) if minor.isdigit() else None
        return None
    return int(entry) if entry.isdigit() else None


@functools.lru_cache(maxsize=1)
def _smi_gpus() -> tuple[tuple[str, str, str], ...]:
    """(index, uuid, minor number) of each GPU nvidia-smi sees here; empty without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=index,uuid,minor_number", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ()
    rows = [tuple(v.strip() for v in line.split(",")) for line in proc.stdout.splitlines() if line.count(",") == 2]
    return tuple(rows) if proc.returncode == 0 else ()  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def _seccomp_program(deny_ip_sockets: bool) -> bytes:
    return seccomp.build(deny_ip_sockets)


def seccomp_program(deny_ip_sockets: bool) -> bytes | None:
    return _seccomp_program(deny_ip_sockets) if seccomp.supported() else None


def _data_fd(data: bytes | str) -> int:
    """A pipe's read end holding ``data`` (small: it must fit the pipe buffer), for bwrap."""
    payload = data.encode() if isinstance(data, str) else data
    r, w = os.pipe()
    os.write(w, payload)
    os.close(w)
    return r


def _seccomp_fd(deny_ip_sockets: bool) -> int:
    """A pipe's read end holding the filter, for ``bwrap --seccomp``."""
    return _data_fd(seccomp_program(deny_ip_sockets) or b"")


def _etc_text(name: str) -> str:
    try:
        text = Path(f"/etc/{name}").read_text(errors="replace")
    except OSError:
        return ""
    return text if text.endswith("\n") or not text else text + "\n"


def _python_roots(python: str) -> list[str]:
    """Folders the interpreter needs: its prefix, the base prefix, and where its binary lives."""
    roots = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), os.path.realpath(sys.exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(os.path.realpath(python))))
    roots.add(os.path.dirname(os.path.abspath(python)))
    for path in sys.path:
        if path.endswith("site-packages") and os.path.isdir(path):
            roots.add(os.path.realpath(path))
    keep = sorted(r for r in roots if r not in ("/", "/usr") and not r.startswith("/usr/"))
    # Drop folders already inside another kept folder.
    return [r for r in keep if not any(r != o and r.startswith(o + "/") for o in keep)]


def _parents(path: str, made: set[str]) -> list[str]:
    """``--dir`` each missing parent with mode 0755 (bwrap would make them 0700)."""
    out: list[str] = []
    parts = Path(path).parts
    for i in range(2, len(parts)):
        parent = str(Path(*parts[:i]))
        if parent not in made:
            made.add(parent)
            out += ["--perms", "0755", "--dir", parent]
    return out


def worker_env(extra: dict[str, str], threads: int) -> dict[str, str]:
    """The cleared environment a worker starts with: nothing of the grader's leaks in."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "USER": "grader",
        "LOGNAME": "grader",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "MALLOC_ARENA_MAX": "2",
        "TRITON_CACHE_DIR": "/tmp/triton",
        "PYTHONHASHSEED": "0",
    }
    for key in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra)
    return env


# -- choosing a tier --------------------------------------------------------------------------

def _try(argv: list[str], pass_fds: tuple[int, ...], env: dict[str, str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            argv, pass_fds=pass_fds, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, timeout=30, start_new_session=True,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    text = (proc.stderr or proc.stdout or b"").decode(errors="replace").strip().splitlines()
    return proc.returncode == 0, (text[-1] if text else f"exit status {proc.returncode}")


def run_in_sandbox(launcher: Launcher, code: str, python: str = sys.executable) -> tuple[bool, str]:
    """Run ``python -c code`` through the tier's real command line in place of the worker (as a
    leased uid); whether it exited 0, and the last line it printed (stderr first)."""
    return _starts(launcher, python, code)


def _starts(launcher: Launcher, python: str, code: str = "import numpy") -> tuple[bool, str]:
    """Whether the tier's real command line starts (a one-line program in place of the worker,
    as a leased uid), and the last line it printed."""
    lease = UidLease(launcher.uid) if launcher.uid is not None else None
    r, w = os.pipe()
    try:
        cmd = launcher.command(python, BOOT_DIR / "worker.py", (r, w), worker_env({}, 1), Limits(), lease.uid if lease else None)
        extra = tuple(fd for fd in cmd.pass_fds if fd not in (r, w))
        try:
            return _try(cmd.argv[:-3] + ["-c", code], extra, cmd.env)
        finally:
            for fd in extra:
                os.close(fd)
    finally:
        os.close(r)
        os.close(w)
        if lease is not None:
            lease.release()


@functools.lru_cache(maxsize=4)
def probe(python: str = sys.executable, gpu: bool = False, force: str | None = None) -> Launcher:
    """The strongest tier that starts on this machine (``force`` names one: 'bubblewrap' or 'process')."""
    root = os.geteuid() == 0
    uid = SLOT_UID_BASE if root and shutil.which("setpriv") else None
    notes: list[str] = []
    if force in (None, "bubblewrap"):
        if shutil.which("bwrap") and shutil.which("prlimit"):
            candidate = Launcher("bubblewrap", degraded=False, uid=uid, gpu=gpu)
            ok, why = _starts(candidate, python)
            if ok:
                if not seccomp.supported():
                    candidate.warnings.append(f"no seccomp filter for {os.uname().machine}")
                return candidate
            notes.append(f"bubblewrap could not start a worker ({why})")
        else:
            notes.append("bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap")
        if force == "bubblewrap":
            raise RuntimeError("; ".join(notes))
    fallback = Launcher("process", degraded=True, uid=uid, gpu=gpu)
    if root and shutil.which("unshare"):
        candidate = Launcher("process+unshare", degraded=True, uid=uid, gpu=gpu)
        if _starts(candidate, python)[0]:
            fallback = candidate
    if fallback.uid is not None:
        if not _starts(fallback, python)[0]:
            notes.append(f"uid {fallback.uid} cannot run {python}, so the worker keeps the grader's uid")
            fallback.uid = None
    fallback.warnings = [
        "DEGRADED ISOLATION: the submission runs as a plain process that can read the file system"
        + ("" if fallback.mode == "process+unshare" else " and use the network"),
        *notes,
    ]
    if fallback.uid is None:
        fallback.warnings.append("the worker runs with the grader's own uid")
    return fallback


def choose(sandbox: str = "auto", official: bool = False, allow_unsandboxed: bool = False) -> Launcher:
    """The launcher for a grading: the tier ``sandbox`` names ('auto' for the strongest here).
    Official grading (LMS, batch, --official) refuses degraded isolation unless allowed."""
    from grader.errors import InfrastructureError

    try:
        launcher = probe(sys.executable, False, None if sandbox == "auto" else sandbox)
    except RuntimeError as exc:
        raise InfrastructureError(f"the {sandbox} sandbox cannot start here: {exc}") from None
    if official and launcher.degraded and not allow_unsandboxed:
        raise InfrastructureError(
            "official grading needs bubblewrap isolation, which cannot start here "
            f"({'; '.join(launcher.warnings[1:]) or launcher.mode}); install bubblewrap or pass --allow-unsandboxed"
        )
    return launcher
