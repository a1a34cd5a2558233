"""How a worker process is started: the isolation tiers, what each guarantees, and the probe.

* ``bubblewrap``: private mount, pid, network, IPC and UTS namespaces; only the interpreter,
  its packages, the worker and the submission are visible, read-only; a private /tmp; no
  capabilities; a leased uid of its own when the grader is root; seccomp; rlimits; a cleared
  environment. Built from the options the installed bwrap has (:mod:`grader.sandbox.bwrap`).
* ``process``: for the places namespaces cannot be made (a default Docker or PrairieLearn
  container: no CAP_SYS_ADMIN, a seccomp profile that forbids new namespaces; a node without
  unprivileged user namespaces). A plain process with the same uid drop, seccomp, rlimits and
  cleared environment, confined by Landlock where the kernel has it.

Both tiers run under the keeper (:mod:`grader.sandbox.keeper`) and, where a cgroup is writable,
in a cgroup of their own (:mod:`grader.sandbox.cgroups`). Every tier lists its guarantees, held
or missing, with the mechanism or the reason; official grading accepts a tier only when it keeps
the solutions, the secret seed and the network out of the submission's reach.

The probe starts a real worker in each candidate configuration, strongest first, and keeps the
first that comes up and confirms (before importing anything of the student's) the uid, seccomp
and Landlock it runs under. Nothing falls back silently: what a weaker configuration costs is in
every result.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.results import Guarantee
from grader.sandbox import allocation, cgroups, procfs, seccomp
from grader.sandbox import bwrap as bwrap_detect

BOOT_DIR = Path(__file__).parent / "boot"
KEEPER = Path(__file__).parent / "keeper.py"
SANDBOX_BOOT = "/boot"
SANDBOX_SUB = "/sub"
REFERENCE_KERNELS = "/reference-kernels"
SHM_MB = 64
PROCESSES_WITHOUT_CGROUP = 4
SHARED_UID_SLACK = 16
"""Tasks the grader's uid may start elsewhere while a worker sharing that uid runs (no uid or
user namespace of its own, no pids cgroup), so that the worker's own threads can still start."""
TIERS = ("bubblewrap", "process")
OFFICIAL = ("solutions", "secret", "network")
"""What official grading needs in every tier; without bubblewrap's namespaces, see official_needs."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
ETC_FILES = ("ld.so.cache", "nsswitch.conf", "localtime")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one worker (rlimits; docs/sandbox.md says what each one bounds)."""

    data_mb: int | None = 4096
    """RLIMIT_DATA of each process from its first instruction: its private memory (heap,
    anonymous and private writable mappings), which is what an allocation takes. The code of
    shared libraries is not counted, so a CUDA build of torch, which maps gigabytes of libraries
    it never touches, starts under it."""
    address_space_mb: int | None = 4096
    """RLIMIT_AS beyond what the interpreter and the lab's imports mapped: the worker sets it from
    its own mappings just before it imports the submission. It bounds what RLIMIT_DATA does not
    count (shared anonymous memory) without charging the libraries' mappings."""
    cpu_s: int = 120
    nproc: int = 64
    fsize_mb: int = 64
    nofile: int = 256
    tmp_mb: int = 256
    memory_mb: int | None = None
    """One budget for the whole process tree (a memory cgroup); None: none set."""
    budget_mb: int | None = None
    """The lab's memory budget, whatever enforces it (a cgroup, or private memory times processes)."""

    def prlimit_args(self, nproc: bool = True) -> list[str]:
        """prlimit's command line for these limits (``nproc``: with the process limit, which
        bubblewrap in a user namespace of its own applies inside it instead)."""
        args = [f"--cpu={self.cpu_s}", f"--fsize={self.fsize_mb << 20}", f"--nofile={self.nofile}", "--core=0"]
        if nproc:
            args.insert(1, f"--nproc={self.nproc}")
        if self.data_mb:
            args.insert(0, f"--data={self.data_mb << 20}")
        return [shutil.which("prlimit") or "prlimit", *args, "--"]

    def worker_init(self) -> dict[str, int]:
        """What the worker applies itself, before it imports the submission (see ``address_space_mb``)."""
        return {"address_space_extra": self.address_space_mb << 20} if self.address_space_mb else {}


@dataclass
class WorkerCommand:
    """What a launcher produces: the argv, the environment, and the fds to pass."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    submission_path: str
    seccomp: bytes | None
    """A filter the worker installs itself (the tier where no bwrap installs one)."""
    uid: int | None = None
    """The uid the worker runs as, when it is its own: every process of it is killed afterwards."""
    landlock: dict[str, list[str]] | None = None
    """The allow-list the worker confines itself to with Landlock (read, write, devices)."""
    cwd: str | None = None
    cleanup: list[Path] = field(default_factory=list)
    """Files and folders of this worker to remove once it is gone."""


@dataclass
class Launcher:
    """One isolation tier, as configured on this machine."""

    mode: str
    degraded: bool = False
    warnings: list[str] = field(default_factory=list)
    drop_uid: bool = False
    """Run each worker as a leased uid of its own (the grader is root and other users can run Python)."""
    gpu: bool = False
    bwrap: bwrap_detect.Bwrap | None = None
    landlock: int = 0
    """The Landlock ABI the worker confines itself with (0: none)."""
    cgroups: cgroups.Support = field(default_factory=cgroups.Support)
    notes: dict[str, str] = field(default_factory=dict)
    """Why a stronger configuration was not used, by guarantee name."""
    guarantees: list[Guarantee] = field(default_factory=list)
    official_ok: bool = False
    reference_kernels: str | None = None
    """The grader's folder of the reference's compiled Triton kernels (grader/gpu_cache.py), which a
    GPU worker reads through at REFERENCE_KERNELS: read-only, openable by name only (bubblewrap tier)."""

    # -- resources --------------------------------------------------------------------------------

    def limits(self, memory_mb: int, gpu: bool = False, heavy: bool = False) -> Limits:
        """The limits of one worker with a memory budget of ``memory_mb``. With a memory cgroup
        the budget covers the whole tree; without one, the number of processes times the private
        memory of each is kept within it (``heavy``: torch is imported)."""
        if gpu:  # CUDA maps and reserves ~20 GiB: no memory rlimit, and host memory is not budgeted
            return Limits(data_mb=None, address_space_mb=None, nproc=512 + self._base_tasks(), cpu_s=600)
        if self.cgroups.has("memory"):
            return Limits(
                data_mb=memory_mb, address_space_mb=memory_mb, nproc=64 + self._base_tasks(), memory_mb=memory_mb,
                budget_mb=memory_mb,
            )  # fmt: skip
        # At most 4 tasks (threads count too), each a quarter of the budget; fewer when a quarter
        # is below what one process needs (private memory after import: numpy 90 MiB, torch's CPU
        # build 0.2 GiB, its CUDA build 0.7 GiB).
        floor = 1024 if heavy else 256
        count = min(PROCESSES_WITHOUT_CGROUP, max(2, memory_mb // floor))
        share = memory_mb // count
        return Limits(data_mb=share, address_space_mb=share, nproc=count + self._base_tasks(), budget_mb=memory_mb)

    def own_user_namespace(self) -> bool:
        """Whether each worker's processes are counted apart from everything else its uid runs:
        bubblewrap makes a user namespace of its own for a grader that is not root, and from
        Linux 5.14 RLIMIT_NPROC counts the tasks of a uid per user namespace (a limit set inside
        counts only the namespace's tasks; the namespace as a whole is held to the limit its
        creator had)."""
        return self.mode == "bubblewrap" and os.geteuid() != 0 and per_namespace_nproc()

    def _base_tasks(self) -> int:
        """Tasks the process limit must leave room for besides the submission's own. A leased uid
        starts from nothing and root is not counted at all; in a user namespace of its own
        (:meth:`own_user_namespace`) only bwrap's init process is there. Otherwise RLIMIT_NPROC
        counts every task of the grader's uid (a desktop session, other batch workers, torch's
        threads): what it runs now, the keeper, and room for it to start a few more meanwhile."""
        if self.drop_uid or os.geteuid() == 0:
            return 0
        if self.own_user_namespace():
            return 1
        return tasks_of(os.geteuid()) + (3 if self.mode == "bubblewrap" else 1) + SHARED_UID_SLACK

    def private_tmp(self, uid: int | None, memory_mb: int | None = None) -> Path | None:
        """A fresh folder for the worker's /tmp where the tier needs one from the host (the
        process tier; bwrap without ``--size``), on a bounded tmpfs where there is one."""
        if self.mode == "bubblewrap" and self._bwrap_has("--size") and self._bwrap_has("--perms"):
            return None
        base, _ = self.tmp_place(memory_mb)
        path = Path(tempfile.mkdtemp(prefix="grader-tmp-", dir=base))
        if uid is not None:
            os.chown(path, uid, uid)
        os.chmod(path, 0o700)
        return path

    def tmp_place(self, memory_mb: int | None) -> tuple[Path, str | None]:
        """Where private tmp folders go, and what bounds them (None: only RLIMIT_FSIZE per file).
        /dev/shm is a tmpfs: its pages count against a memory cgroup, and without one its own
        size bounds it when that is within the budget (Docker's is 64 MiB)."""
        shm = "/dev/shm"
        if _tmpfs_writable(shm):
            if self.cgroups.has("memory"):
                return Path(shm), "private folder on tmpfs, charged to the memory budget"
            size = os.statvfs(shm).f_blocks * os.statvfs(shm).f_frsize
            if memory_mb and size <= memory_mb << 20:
                return Path(shm), f"private folder on /dev/shm, a tmpfs of {size >> 20} MiB shared by the container"
        return Path(tempfile.gettempdir()), None

    def _bwrap_has(self, option: str) -> bool:
        return self.bwrap is not None and self.bwrap.has(option)

    # -- building the command ---------------------------------------------------------------

    def command(
        self,
        python: str,
        submission: Path,
        fds: tuple[int, int],
        env: dict[str, str],
        limits: Limits,
        uid: int | None = None,
        keeper_args: list[str] | None = None,
        tmp: Path | None = None,
    ) -> WorkerCommand:
        """The command line of one worker. ``uid``: the lease it runs as (when the tier drops
        it); ``keeper_args``: the worker's cgroups, for the keeper; ``tmp``: its private tmp."""
        uid = uid if self.drop_uid else None
        keeper = [python, "-I", "-S", str(KEEPER), *(keeper_args or []), "--"]
        if self.mode == "bubblewrap":
            cmd = self._bwrap(python, submission, fds, env, limits, uid, tmp)
        else:
            cmd = self._process(python, submission, fds, env, limits, uid, tmp)
        cmd.argv = keeper + cmd.argv
        return cmd

    def _worker_argv(self, python: str, boot: str, fds: tuple[int, int]) -> list[str]:
        return [python, "-I", "-B", f"{boot}/worker.py", str(fds[0]), str(fds[1])]

    def _setpriv(self, uid: int | None) -> list[str]:
        if uid is not None:
            return [
                "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--",
            ]  # fmt: skip
        if os.geteuid() == 0:
            # Root that cannot hand the worker a uid of its own still takes every capability away.
            return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
        return []

    def _bwrap(
        self, python: str, submission: Path, fds: tuple[int, int], env: dict[str, str], limits: Limits, uid: int | None,
        tmp: Path | None,
    ) -> WorkerCommand:  # fmt: skip
        info = self.bwrap
        assert info is not None
        perms = info.has("--perms")
        if self.gpu and self.reference_kernels:  # boot/kernel_cache.py reads through to them
            env = dict(env, GRADER_REFERENCE_KERNELS=REFERENCE_KERNELS, TRITON_CACHE_MANAGER="kernel_cache:ReadThroughCacheManager")
        bpf_r = _data_fd(seccomp_program() or b"")
        cleanup: list[Path] = []
        # The process limit applies inside the sandbox (see own_user_namespace): set outside, it
        # would count every task of the uid and hold the namespace to it too.
        argv = [*limits.prlimit_args(nproc=False), info.path]
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if os.geteuid() != 0:
            argv += ["--unshare-user"]
        argv += ["--die-with-parent", "--new-session"]
        if info.has("--clearenv"):
            argv.append("--clearenv")
            for key, value in env.items():
                argv += ["--setenv", key, value]
            process_env = {"PATH": "/usr/bin:/bin"}
        else:  # bwrap before 0.5 passes its own environment on: make that the worker's
            process_env = dict(env)
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
            if os.path.islink(name):
                argv += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                argv += ["--ro-bind", name, name]
        argv += (["--perms", "0755"] if perms else []) + ["--dir", "/etc"]
        for name in ETC_FILES:
            if os.path.exists(f"/etc/{name}"):
                argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        # The worker's uid gets a passwd and group entry: libraries (torch's profiler among them)
        # look the current user up and fail on an unknown uid.
        data_fds = []
        for name, extra in (("passwd", f"grader:x:{uid}:{uid}:grader worker:/tmp:/usr/sbin/nologin\n"),
                            ("group", f"grader:x:{uid}:\n")):  # fmt: skip
            text = _etc_text(name) + (extra if uid is not None else "")
            if perms:
                fd = _data_fd(text)
                data_fds.append(fd)
                argv += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
            else:  # before 0.5, --ro-bind-data makes the file 0600: bind a readable copy instead
                copy = _host_copy(text)
                cleanup.append(copy)
                argv += ["--ro-bind", str(copy), f"/etc/{name}"]
        # The private /tmp comes before the interpreter's binds: a venv under /tmp must stay visible.
        if tmp is None:
            argv += ["--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
        else:
            argv += ["--bind", str(tmp), "/tmp"]
        made: set[str] = {"/", "/usr", "/etc", "/tmp"}
        for root in _python_roots(python):
            argv += _parents(root, made, perms)
            argv += ["--ro-bind", root, root]
        argv += ["--ro-bind", str(BOOT_DIR), SANDBOX_BOOT]
        argv += ["--ro-bind", str(submission.parent), SANDBOX_SUB]
        if self.gpu and self.reference_kernels:
            argv += ["--ro-bind", self.reference_kernels, REFERENCE_KERNELS]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        if self.gpu:  # the allocation is the grader's (its Slurm variables); the worker's environment is cleared
            devices, visible = gpu_devices({**os.environ, **env})
            for dev in devices:
                argv += ["--dev-bind", dev, dev]
            if visible is not None:
                argv += ["--setenv", "CUDA_VISIBLE_DEVICES", visible]
        if info.has("--size") and perms:
            argv += ["--perms", "1777", "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm"]
        else:  # no size cap for a tmpfs: a read-only, empty /dev/shm
            argv += ["--tmpfs", "/dev/shm", "--remount-ro", "/dev/shm"]
        # bwrap changes folder before the uid drop, without capabilities: a private tmp of the worker's uid is closed to it.
        argv += ["--chdir", "/tmp" if tmp is None else "/", "--seccomp", str(bpf_r)]
        if os.geteuid() == 0:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        argv += [shutil.which("prlimit") or "prlimit", f"--nproc={limits.nproc}", "--"]
        argv += self._setpriv(uid)
        argv += self._worker_argv(python, SANDBOX_BOOT, fds)
        return WorkerCommand(
            argv, process_env, (*fds, bpf_r, *data_fds), f"{SANDBOX_SUB}/{submission.name}", None, uid, cleanup=cleanup
        )

    def _process(
        self, python: str, submission: Path, fds: tuple[int, int], env: dict[str, str], limits: Limits, uid: int | None,
        tmp: Path | None,
    ) -> WorkerCommand:  # fmt: skip
        assert tmp is not None, "the process tier needs a private tmp"
        env = dict(env, HOME=str(tmp), TMPDIR=str(tmp), TRITON_CACHE_DIR=str(tmp / "triton"))
        argv = [*limits.prlimit_args(), *self._setpriv(uid), *self._worker_argv(python, str(BOOT_DIR), fds)]
        rules = None
        if self.landlock:
            read = [*_python_roots(python), "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"]
            read += [f"/etc/{name}" for name in (*ETC_FILES, "passwd", "group")]
            read += [str(BOOT_DIR), str(submission.parent), "/proc", "/sys/devices/system"]
            devices = list(DEVICES)
            if self.gpu:  # the CUDA driver also reads /sys/bus/pci and its libraries' folders (untested here: no GPU)
                devices += sorted(glob.glob("/dev/nvidia*"))
                read += ["/sys", *(p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p)]
            rules = {"read": read, "write": [str(tmp)], "devices": devices}
        return WorkerCommand(argv, env, fds, str(submission), seccomp_program(), uid, rules, cwd=str(tmp))


DEV = "/dev"
NVIDIA_GPU_FILE = re.compile(r"^nvidia(\d+)$")
"""The name of one GPU's device file (``nvidia3``), as opposed to the control files."""


def gpu_devices(env: Mapping[str, str], dev: str | None = None) -> tuple[list[str], str | None]:
    """The NVIDIA device files a GPU worker gets, and the CUDA_VISIBLE_DEVICES it then sees.

    Only the allocated GPUs: ``CUDA_VISIBLE_DEVICES`` (Slurm sets it to the GPUs it allocated)
    names them. In a Slurm job each entry is mapped through the allocation
    (:mod:`grader.sandbox.allocation`: ``SLURM_JOB_GPUS``, gres.conf order, and the renumbering
    under ``ConstrainDevices``); elsewhere through nvidia-smi's minor numbers (an index counts
    among the GPUs this process can see, as CUDA's does); without either an index is taken as
    the minor number. In the sandbox the unbound GPUs do not exist, so the allocated ones are
    renumbered from 0. The control files (nvidiactl, nvidia-uvm, ...) are always bound. Without
    the variable, or with entries that cannot be mapped (MIG instances, UUIDs without
    nvidia-smi), every GPU is bound and the variable passes through unchanged.
    """
    found = sorted(glob.glob(os.path.join(dev or DEV, "nvidia*")))
    per_gpu = {int(m[1]): path for path in found if (m := NVIDIA_GPU_FILE.match(os.path.basename(path)))}
    control = [path for path in found if not NVIDIA_GPU_FILE.match(os.path.basename(path))]
    every = control + [per_gpu[n] for n in sorted(per_gpu)]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return every, None
    allocated = allocation.allocated_files(env)
    if allocated is not None:
        present = [path for path in allocated if os.path.exists(path)]
        return control + present, ",".join(str(i) for i in range(len(present)))
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


# -- guarantees ---------------------------------------------------------------------------------


def assess(launcher: Launcher, lab_dir: Path | None = None, memory_mb: int | None = None) -> Launcher:
    """``launcher`` with its guarantees for grading the lab in ``lab_dir`` (with a memory budget of
    ``memory_mb``): which hold, which are missing and why, and whether official grading may use it."""
    g: dict[str, tuple[bool, str]] = {}
    bw = launcher.mode == "bubblewrap"
    ll = launcher.landlock
    cg = launcher.cgroups
    uid_note = launcher.notes.get("uid", "the grader is not root, so the worker keeps the grader's uid")
    ll_note = launcher.notes.get("landlock", "this kernel has no Landlock (Linux 5.13+)")

    if bw:
        g["filesystem"] = (True, "mount namespace: only the interpreter, its packages, the worker and the submission, read-only")
    elif ll:
        g["filesystem"] = (True, f"Landlock ABI {ll}: reads only the interpreter, its packages, the worker and the submission; writes only its private tmp")
    else:
        g["filesystem"] = (False, f"no mount namespace ({launcher.notes.get('bubblewrap', 'bubblewrap not used')}) and no Landlock ({ll_note}): "
                                  "the submission reads whatever its uid may read")  # fmt: skip

    if g["filesystem"][0]:
        g["solutions"] = (True, "outside the submission's view (" + ("mount namespace" if bw else "Landlock") + ")")
    elif launcher.drop_uid and lab_dir is not None and hidden_from_others(lab_dir):
        g["solutions"] = (True, f"the lab's files are not readable by other users and the worker runs as a uid of its own ({lab_dir})")
    else:
        why = "the worker keeps the grader's uid" if not launcher.drop_uid else f"the lab's files in {lab_dir} are readable by other users"
        g["solutions"] = (False, f"{why}; the course staff can make them root-only (chmod -R go-rwx on the lab folder) "
                                 "and run the grader as root, or grade where Landlock (Linux 5.13+) or bubblewrap works")  # fmt: skip

    if bw:
        g["secret"] = (True, "cleared environment; the grader's processes are outside the pid namespace")
    elif launcher.drop_uid:
        g["secret"] = (True, "cleared environment; the worker's own uid cannot read the grader's /proc entries")
    elif ll:
        # The worker holds no capabilities (its hello proves it), so Landlock's ptrace rule applies even to uid 0.
        g["secret"] = (True, "cleared environment; Landlock keeps the grader's /proc/<pid>/environ unreadable")
    else:
        g["secret"] = (False, f"the worker runs as the grader's uid ({uid_note}) without a pid namespace or Landlock, "
                              "so it can read the grader's environment in /proc")  # fmt: skip

    if seccomp.supported():
        how = "network namespace (loopback only); " if bw else ""
        how += "seccomp allows only AF_UNIX sockets (no IP, netlink, packet or vsock)"
        if not bw and ll >= 4:
            how += "; Landlock denies TCP bind and connect"
        if not bw and ll >= 6:
            how += " and abstract UNIX sockets outside the sandbox"
        g["network"] = (True, how)
    else:
        g["network"] = (False, f"no seccomp filter for {os.uname().machine}: AF_VSOCK and (without bubblewrap) IP sockets are open")

    if bw:
        g["processes"] = (True, "pid namespace: the grader and other processes are invisible")
    elif launcher.drop_uid:
        g["processes"] = (True, "a uid of its own: it cannot signal the grader or other workers; ptrace is denied")
    elif ll >= 6:
        g["processes"] = (True, f"Landlock ABI {ll}: no signals to processes outside the sandbox; ptrace is denied")
    else:
        g["processes"] = (False, "it runs as the grader's uid and can signal the grader's processes")

    if launcher.drop_uid:
        g["uid"] = (True, "a leased uid of its own, from a range no account uses")
    elif os.geteuid() == 0:
        g["uid"] = (False, f"the worker keeps uid 0 ({uid_note}): without capabilities it still owns root's files, sockets and processes")
    else:
        g["uid"] = (False, uid_note)
    g["seccomp"] = (seccomp.supported(), "deny-list: no tracing, mounts, namespaces, memfd or SysV IPC, no sockets but AF_UNIX" if seccomp.supported() else f"no table for {os.uname().machine}")

    if cg.has("memory") and not launcher.gpu:
        g["memory"] = (True, f"one budget for the whole process tree: {cg.describe('memory')}; tmpfs pages count too")
    else:
        why = "GPU workers have no host-memory budget" if launcher.gpu else f"no memory cgroup ({cg.describe('memory')})"
        g["memory"] = (False, f"{why}: each process is limited in private memory (RLIMIT_DATA) and in address space beyond "
                              "its libraries (RLIMIT_AS), and their number is limited, so the product stays within the budget")  # fmt: skip

    if cg.has("pids"):
        g["pids"] = (True, f"process count of the tree: {cg.describe('pids')}")
    elif launcher.drop_uid:
        g["pids"] = (True, "RLIMIT_NPROC of the worker's own uid")
    elif launcher.own_user_namespace():
        g["pids"] = (True, "RLIMIT_NPROC set inside a user namespace of the worker's own, so it counts only the sandbox's tasks")
    else:
        g["pids"] = (False, f"no pids cgroup ({cg.describe('pids')}); RLIMIT_NPROC counts the grader's uid too")

    bound = launcher.tmp_place(memory_mb)[1]
    if bw and launcher._bwrap_has("--size") and launcher._bwrap_has("--perms"):
        g["tmp"] = (True, "size-capped tmpfs (bwrap --size)")
    elif bound:
        g["tmp"] = (True, bound)
    else:
        why = f"{launcher.bwrap.describe()} has no --size" if bw and launcher.bwrap else "no size-capped tmpfs"
        g["tmp"] = (False, f"{why} and no memory cgroup to charge it to: RLIMIT_FSIZE bounds each file, not their number")

    g["freeze"] = (True, cg.describe("freeze") if cg.has("freeze") else "SIGSTOP to every process of the tree")
    if cg.has("kill"):
        g["cleanup"] = (True, f"the worker's cgroup is killed: {cg.describe('kill')}")
    elif bw:
        g["cleanup"] = (True, "the pid namespace dies with the worker")
    elif launcher.drop_uid:
        g["cleanup"] = (True, "every process of the leased uid is killed")
    elif ll >= 6 or cg.has("freeze"):
        g["cleanup"] = (True, "the keeper (a child subreaper) kills the whole tree")
    else:
        g["cleanup"] = (False, "the submission can signal the keeper that tracks its processes")

    launcher = dataclasses.replace(launcher)
    launcher.guarantees = [Guarantee(name=k, held=v[0], how=v[1]) for k, v in g.items()]
    needs = official_needs(launcher)
    launcher.official_ok = all(g[name][0] for name in needs)
    launcher.degraded = not launcher.official_ok
    launcher.warnings = [f"{k}: {v[1]}" for k, v in g.items() if not v[0]]
    if launcher.degraded:
        open_ = [name for name in needs if not g[name][0]]
        launcher.warnings.insert(0, f"DEGRADED ISOLATION: {', '.join(open_)} within the submission's reach")
    return launcher


def official_needs(launcher: Launcher) -> tuple[str, ...]:
    """The guarantees official grading needs in ``launcher``'s tier: everywhere the solutions, the
    secret and the network out of reach; without bubblewrap's namespaces also the grader's
    processes out of the worker's signals (a uid of its own, or Landlock ABI 6) and, for a root
    grader, a worker uid that is not 0 (Landlock does not cover everything uid 0 owns)."""
    if launcher.mode == "bubblewrap":
        return OFFICIAL
    return (*OFFICIAL, "processes", *(("uid",) if os.geteuid() == 0 else ()))


def hidden_from_others(lab_dir: Path) -> bool:
    """Whether a uid that is neither the owner nor in the group can read no hidden file of the lab:
    a folder on the way is not searchable by others, or no file but the handout and starter is readable."""
    path = Path(lab_dir).resolve()
    for folder in (path, *path.parents):
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return True
        except OSError:
            return False
    visible = {"starter.py", "README.md"}
    for file in path.rglob("*"):
        try:
            mode = file.lstat().st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and mode & stat.S_IROTH and not (file.parent == path and file.name in visible):
            return False
    return True


def blocked_for_others(python: str) -> str | None:
    """Why a uid that neither owns nor shares a group with this interpreter's files (a leased
    worker uid) cannot use it: the first folder on the way to one of its parts (the binary, the
    libpython it loads, its standard library, its site-packages) that other users cannot search,
    or a part they cannot read. None when every part is reachable.

    pyenv, conda and uv install Python under the user's home, often mode 0700 (always for
    /root): the binary still starts (setpriv execs it with the grader's capabilities), but the
    dynamic loader then cannot read its libpython and takes the system's, another version."""
    parts = [os.path.realpath(python), *_loaded("libpython"), sysconfig.get_path("stdlib")]
    parts += [os.path.realpath(p) for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    for part in dict.fromkeys(parts):
        path = Path(part)
        for folder in [*reversed(path.parents), path]:
            try:
                mode = os.stat(folder).st_mode
            except OSError:
                break
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                return f"{folder} is mode {stat.S_IMODE(mode):04o}, so other users cannot reach {part}"
            if stat.S_ISREG(mode) and not mode & stat.S_IROTH:
                return f"{folder} is mode {stat.S_IMODE(mode):04o}, so other users cannot read it"
    return None


def _loaded(stem: str) -> list[str]:
    """The files this process has mapped whose name starts with ``stem`` (its libpython, say)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    files = (line.split(maxsplit=5)[-1] for line in lines if line.count(" ") >= 5)
    return sorted({f for f in files if f.startswith("/") and os.path.basename(f).startswith(stem)})


# -- helpers ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def seccomp_program() -> bytes | None:
    return seccomp.build() if seccomp.supported() else None


def _data_fd(data: bytes | str) -> int:
    """A pipe's read end holding ``data`` (small: it must fit the pipe buffer), for bwrap."""
    payload = data.encode() if isinstance(data, str) else data
    r, w = os.pipe()
    os.write(w, payload)
    os.close(w)
    return r


def _host_copy(text: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="grader-etc-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(name, 0o644)
    return Path(name)


def _etc_text(name: str) -> str:
    try:
        text = Path(f"/etc/{name}").read_text(errors="replace")
    except OSError:
        return ""
    return text if text.endswith("\n") or not text else text + "\n"


def _tmpfs_writable(path: str) -> bool:
    try:
        return os.access(path, os.W_OK) and os.statvfs(path).f_bsize > 0 and _fstype(path) == "tmpfs"
    except OSError:
        return False


def _fstype(path: str) -> str | None:
    best, kind = "", None
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")) and len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        return None
    return kind


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


def _parents(path: str, made: set[str], perms: bool) -> list[str]:
    """``--dir`` each missing parent with mode 0755 (bwrap 0.5+ would make them 0700)."""
    out: list[str] = []
    parts = Path(path).parts
    for i in range(2, len(parts)):
        parent = str(Path(*parts[:i]))
        if parent not in made:
            made.add(parent)
            out += (["--perms", "0755"] if perms else []) + ["--dir", parent]
    return out


@functools.lru_cache(maxsize=1)
def per_namespace_nproc() -> bool:
    """Whether this kernel counts RLIMIT_NPROC per user namespace (Linux 5.14 and later)."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(match) and (int(match[1]), int(match[2])) >= (5, 14)


def tasks_of(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is ``uid``."""
    total = 0
    for _, fields in procfs.statuses():
        held = procfs.uids(fields)
        if held and held[0] == uid:
            try:
                total += int(fields[b"Threads"].strip())
            except (KeyError, ValueError):
                continue
    return total


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


def refusal(launcher: Launcher) -> str:
    """Why official grading will not run in ``launcher``'s tier, and what the course staff can do."""
    needs = official_needs(launcher)
    missing = {g.name: g.how for g in launcher.guarantees if not g.held and g.name in needs}
    extra = "" if needs == OFFICIAL else (
        " (and, without bubblewrap, the grader's processes out of its signals" + (" and a worker uid other than 0)" if "uid" in needs else ")")
    )  # fmt: skip
    return (
        f"official grading needs the solutions, the secret seed and the network out of the submission's reach{extra}, "
        f"and the strongest isolation here ({launcher.mode}) leaves "
        + "; ".join(f"{name} open ({how})" for name, how in missing.items())
        + ". For the course staff: "
        + remedies(launcher)
        + "; or, to accept this isolation, grade with --allow-unsandboxed (an LMS autograder: build or configure it "
        "with that flag) and every result says it was degraded"
    )


def remedies(launcher: Launcher) -> str:
    """What an operator can do here to get a stronger tier, in one line."""
    steps = []
    notes = launcher.notes
    if "bubblewrap" in notes:
        steps.append(
            f"bubblewrap: {notes['bubblewrap']} (install it, apt-get install bubblewrap; in a container it also needs "
            "CAP_SYS_ADMIN and a seccomp profile that allows namespaces, e.g. docker run --cap-add SYS_ADMIN "
            "--security-opt seccomp=unconfined)"
        )
    if not launcher.landlock and launcher.mode == "process":
        steps.append(f"Landlock: {notes.get('landlock', 'not used')} (a host kernel 5.13+; Docker 23+ allows it by default)")
    if not launcher.drop_uid:
        steps.append("worker uid: " + notes.get("uid", "run the grader as root so each worker gets a uid of its own"))
    return "; ".join(steps) or "nothing stronger is available"
