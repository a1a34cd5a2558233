"""A cgroup per worker, where one is writable: one memory and process budget for the worker's
whole tree, freezing it, and killing exactly it.

Each feature takes the first hierarchy that offers it: cgroup v2 (``memory.max``, ``pids.max``,
``cgroup.freeze``, ``cgroup.kill``) or a v1 controller (``memory``, ``pids``, ``freezer``); a
hybrid machine may use both. Worker cgroups are made under the grader's own cgroup, so whatever
limits the grader lives under also bound its workers; v2 controllers that the grader's cgroup
cannot hand down (it holds processes itself) are looked for under the hierarchy's root instead.
Tmpfs pages a worker writes are charged to its memory cgroup, which is how the private /tmp
stays bounded where bubblewrap has no ``--size``. Nothing here is assumed: :func:`support` tries
each candidate (make a child, set the limit, remove it) and says why a feature is missing.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.sandbox import leases

FEATURES = ("memory", "pids", "freeze", "kill")
V1_CONTROLLER = {"memory": "memory", "pids": "pids", "freeze": "freezer"}
FREEZE_TIMEOUT_S = 2.0
PREFIX = "grader-w-"
"""Worker cgroups: ``<parent>/grader-w-<random>/``, each locked by the grader that made it."""


@dataclass(frozen=True)
class Place:
    """Where worker cgroups of one feature are made: a parent folder in a v1 or v2 hierarchy."""

    parent: Path
    v2: bool


@dataclass
class Support:
    """Which features a per-worker cgroup can offer here, and why the others cannot."""

    places: dict[str, Place] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def has(self, feature: str) -> bool:
        return feature in self.places

    def describe(self, feature: str) -> str:
        place = self.places.get(feature)
        if place is None:
            return self.missing.get(feature, "no writable cgroup")
        return f"cgroup {'v2' if place.v2 else 'v1'} ({place.parent})"


def _mounts() -> list[tuple[str, str, Path, set[str]]]:
    """(fstype, root, mount point, super options) of every cgroup mount this process sees."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = Path(fields[4].replace("\\040", " "))
        out.append((tail[0], fields[3], point, set(tail[2].split(","))))
    return out


def _own_paths() -> tuple[str | None, dict[str, str]]:
    """The grader's own cgroup: its v2 path, and its v1 path per controller."""
    v2, v1 = None, {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and not controllers:
            v2 = path
        for name in controllers.split(","):
            if name:
                v1[name] = path
    return v2, v1


def _inside(point: Path, root: str, path: str) -> Path | None:
    """The folder of cgroup ``path`` under a mount of cgroup ``root`` at ``point`` (None if outside it)."""
    root = root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None
    return point / path[len(root) :].lstrip("/")


def _trial(parent: Path, files: dict[str, str | None]) -> str | None:
    """Make a child of ``parent``, write ``files`` into it (None: the file must exist), remove it;
    None if all of that worked."""
    child = parent / f"grader-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        child.mkdir()
    except OSError as exc:
        return f"cannot make a cgroup in {parent} ({exc.strerror or exc})"
    try:
        for name, value in files.items():
            if value is None:
                if not (child / name).exists():
                    return f"no {name} in {parent} (it needs Linux 5.14)"
                continue
            try:
                (child / name).write_text(value)
            except OSError as exc:
                return f"cannot write {name} in {parent} ({exc.strerror or exc})"
        return None
    finally:
        try:
            child.rmdir()
        except OSError:
            pass


def _enable(parent: Path, controllers: list[str]) -> str | None:
    """Hand ``controllers`` down to ``parent``'s children (v2); None if they are available there."""
    try:
        have = (parent / "cgroup.subtree_control").read_text().split()
        offered = (parent / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return f"{parent}: {exc.strerror or exc}"
    wanted = [c for c in controllers if c not in have]
    if not wanted:
        return None
    if any(c not in offered for c in wanted):
        return f"{parent} offers no {', '.join(c for c in wanted if c not in offered)} controller"
    try:
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    except OSError as exc:
        why = "it holds processes itself" if exc.errno == errno.EBUSY else (exc.strerror or str(exc))
        return f"cannot enable {', '.join(wanted)} below {parent} ({why})"
    return None


TRIAL_FILES: dict[str, tuple[dict[str, str | None], dict[str, str | None]]] = {
    "memory": ({"memory.max": str(64 << 20)}, {"memory.limit_in_bytes": str(64 << 20)}),
    "pids": ({"pids.max": "64"}, {"pids.max": "64"}),
    "freeze": ({"cgroup.freeze": "0"}, {"freezer.state": "THAWED"}),
    "kill": ({"cgroup.kill": None}, {}),
}


@functools.lru_cache(maxsize=1)
def support() -> Support:
    """What per-worker cgroups can do on this machine (tried once per process)."""
    found = Support()
    mounts = sorted(_mounts(), key=lambda m: m[0] != "cgroup2")  # v2 first: cgroup.kill is atomic
    own_v2, own_v1 = _own_paths()
    if not mounts:
        for feature in FEATURES:
            found.missing[feature] = "no cgroup file system is mounted"
        return found
    for feature in FEATURES:
        reasons = []
        for fstype, root, point, options in mounts:
            if fstype == "cgroup2" and own_v2 is not None:
                candidates = [p for p in (_inside(point, root, own_v2), point) if p is not None]
                for parent in dict.fromkeys(candidates):
                    if feature in ("memory", "pids"):
                        why = _enable(parent, [feature])
                        if why:
                            reasons.append(why)
                            continue
                    why = _trial(parent, TRIAL_FILES[feature][0])
                    if why is None:
                        found.places[feature] = Place(parent, True)
                        break
                    reasons.append(why)
            elif fstype == "cgroup" and V1_CONTROLLER.get(feature) in options:
                path = own_v1.get(V1_CONTROLLER[feature])
                parent = _inside(point, root, path) if path is not None else None
                if parent is None:
                    continue
                why = _trial(parent, TRIAL_FILES[feature][1])
                if why is None:
                    found.places[feature] = Place(parent, False)
                else:
                    reasons.append(why)
            if feature in found.places:
                break
        if feature not in found.places:
            if not reasons:
                reasons.append("no cgroup hierarchy here offers it")
            if any("Read-only" in r for r in reasons):
                reasons = ["the cgroup file system is mounted read-only (as in a default Docker container)"]
            found.missing[feature] = reasons[0]
    return found


class WorkerCgroup:
    """The cgroups of one worker: made before it starts, removed after it is gone.

    The keeper sits in the worker's cgroups; everything it starts sits, in the freezing
    hierarchy, in a child cgroup ``tree`` that is what gets frozen. So a frozen worker never
    freezes its keeper, which must stay able to act when the grader dies between calls."""

    def __init__(self, memory_bytes: int | None, pids_max: int | None, features: Support | None = None) -> None:
        self.support = features or support()
        self.dirs: dict[str, Path] = {}
        self._tree: Path | None = None
        made: dict[Path, Path] = {}
        self._folders: list[Path] = []
        self._leases: list[leases.Lease] = []
        try:
            for feature, place in self.support.places.items():
                if place.parent not in made:
                    _sweep(place.parent)
                    lease = leases.hold(place.parent, PREFIX, 0o755)
                    self._leases.append(lease)
                    made[place.parent] = lease.path
                    self._folders.append(lease.path)
                self.dirs[feature] = made[place.parent]
            if "freeze" in self.dirs:
                self._tree = self.dirs["freeze"] / "tree"
                self._tree.mkdir()
            if "memory" in self.dirs and memory_bytes:
                folder = self.dirs["memory"]
                if self.support.places["memory"].v2:
                    (folder / "memory.max").write_text(str(memory_bytes))
                    _write_if_present(folder / "memory.swap.max", "0")
                else:
                    (folder / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    _write_if_present(folder / "memory.memsw.limit_in_bytes", str(memory_bytes))
            if "pids" in self.dirs and pids_max:
                (self.dirs["pids"] / "pids.max").write_text(str(pids_max))
        except OSError:
            self.remove()
            raise

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the keeper writes its pid into."""
        return [str(folder / "cgroup.procs") for folder in self._folders]

    def keeper_args(self) -> list[str]:
        """The keeper's options: the cgroups it enters, the one its child enters, how it thaws."""
        args = []
        for procs in self.procs_files():
            args += ["--cgroup", procs]
        if self._tree is not None:
            args += ["--tree-cgroup", str(self._tree / "cgroup.procs"), "--thaw", str(self._state_file())]
        return args

    def _state_file(self) -> Path:
        assert self._tree is not None
        return self._tree / ("cgroup.freeze" if self.support.places["freeze"].v2 else "freezer.state")

    def members(self) -> set[int]:
        pids: set[int] = set()
        for folder in [*self._folders, *([self._tree] if self._tree else [])]:
            try:
                pids.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return pids

    @property
    def can_freeze(self) -> bool:
        return "freeze" in self.dirs

    def freeze(self, frozen: bool = True) -> bool:
        """Freeze (or thaw) everything the keeper started; False if it did not settle in time."""
        assert self._tree is not None
        v2 = self.support.places["freeze"].v2
        self._state_file().write_text(thaw_value(self._state_file()) if not frozen else ("1" if v2 else "FROZEN"))
        started = time.monotonic()
        while True:
            if v2:
                done = f"frozen {1 if frozen else 0}" in (self._tree / "cgroup.events").read_text()
            else:
                done = (self._tree / "freezer.state").read_text().strip() == ("FROZEN" if frozen else "THAWED")
            if done:
                return True
            waited = time.monotonic() - started
            if waited > FREEZE_TIMEOUT_S:
                return False
            time.sleep(0.00005 if waited < 0.002 else 0.001)  # an idle worker settles in microseconds

    def kill(self, timeout_s: float = 5.0) -> set[int]:
        """SIGKILL every process in the tree; returns any still there after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        if "kill" in self.dirs:
            try:
                (self.dirs["kill"] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        frozen = self.can_freeze and self._try_freeze()
        while True:
            left = self.members()
            if not left or time.monotonic() > deadline:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if frozen:
                # v1: a frozen task dies of SIGKILL only once thawed.
                self._try_thaw()
                frozen = False
            time.sleep(0.005)
        return left

    def _try_freeze(self) -> bool:
        try:
            return self.freeze(True)
        except OSError:
            return False

    def _try_thaw(self) -> None:
        try:
            self.freeze(False)
        except OSError:
            pass

    def oom_kills(self) -> int:
        """How many processes the kernel killed for running over the memory budget."""
        folder = self.dirs.get("memory")
        if folder is None:
            return 0
        name = "memory.events" if self.support.places["memory"].v2 else "memory.oom_control"
        try:
            for line in (folder / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        for folder in [*([self._tree] if self._tree else []), *self._folders]:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # the last processes are still being torn down
        for lease in self._leases:  # after the folders are gone: no sweep meets them unlocked
            lease.release()
        self._folders, self._tree, self._leases = [], None, []


def thaw_value(state_file: Path) -> str:
    return "0" if state_file.name == "cgroup.freeze" else "THAWED"


def _sweep(parent: Path) -> None:
    """Remove the empty worker cgroups that no grader holds any more under ``parent`` (a keeper
    outlives its grader only to kill the tree; what it leaves is an empty folder). Held means
    locked, not "a process of that pid exists": graders sharing a cgroup tree may not share a
    pid namespace."""

    def remove(folder: Path) -> None:
        for leftover in (folder / "tree", folder):
            try:
                leftover.rmdir()
            except OSError:
                pass  # not empty (processes still in it), or not ours to remove

    leases.sweep(parent, PREFIX, remove)


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        try:
            path.write_text(value)
        except OSError:
            pass
