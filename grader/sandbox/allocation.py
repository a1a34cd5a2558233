"""The GPU device files a Slurm job was given, from Slurm's own variables and configuration.

Slurm names a job's GPUs in ``SLURM_JOB_GPUS`` (``SLURM_STEP_GPUS`` inside a step) by their index
on the node: the position of each GPU's device file in the node's gres.conf lines (checked on
Slurm 22.05: with ``File=/dev/nvidia1`` listed before ``File=/dev/nvidia0``, index 0 is
``/dev/nvidia1``). ``CUDA_VISIBLE_DEVICES`` holds those same indices, except under
``TaskPlugin=task/cgroup`` with ``ConstrainDevices=yes``, where Slurm numbers the job's own GPUs
from 0 because its device cgroup hides the others from CUDA. So a task given GPU 1 of a
constrained node sees ``CUDA_VISIBLE_DEVICES=0``: read as "minor number 0" it names a device
the task's cgroup denies. These are the rules Slurm itself applies (``gres_common.c``), read
from the node's slurm.conf, gres.conf and cgroup.conf, so no nvidia-smi is needed in the job.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONF = "/etc/slurm/slurm.conf"


def expand(text: str) -> list[str]:
    """A Slurm host list (``node[01-03,7]``, ``/dev/nvidia[0-3]``, comma-separated) as its names, in order."""
    names: list[str] = []
    for item in _split(text):
        match = re.search(r"\[([^\]]*)\]", item)
        if match is None:
            names.append(item)
            continue
        head, tail = item[: match.start()], item[match.end() :]
        for part in match[1].split(","):
            low, _, high = part.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise ValueError(f"not a host list range: [{match[1]}]")
            width = len(low) if low.startswith("0") else 0
            for n in range(int(low), int(high or low) + 1):
                names += [head + str(n).zfill(width) + rest for rest in expand(tail or "") or [""]]
    return names


def _split(text: str) -> list[str]:
    """Split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _records(path: Path) -> list[dict[str, str]]:
    """The ``Key=Value`` records of a Slurm configuration file, one per line, keys lower-cased."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        record = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                record[key.lower()] = value
        records.append(record)
    return records


@dataclass
class NodeGpus:
    """What the node's configuration says about its GPUs."""

    files: list[str] = field(default_factory=list)
    """The device file of GPU index 0, 1, ... (gres.conf order)."""
    constrained: bool = False
    """Slurm renumbers the job's GPUs from 0 (task/cgroup with ConstrainDevices=yes)."""


def node_gpus(env: Mapping[str, str]) -> NodeGpus | None:
    """The node's GPUs as its Slurm configuration lists them; None if it cannot be read or lists none
    by file (``AutoDetect=nvml`` alone: then nothing here can name the device files)."""
    conf = Path(env.get("SLURM_CONF") or DEFAULT_CONF)
    node = env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    try:
        slurm = {k: v for record in _records(conf) for k, v in record.items()}
        gres = _records(conf.parent / "gres.conf")
    except OSError:
        return None
    try:
        files = [
            path
            for record in gres
            if record.get("name") == "gpu" and "file" in record and node in (expand(record["nodename"]) if "nodename" in record else [node])
            for path in expand(record["file"])
        ]
    except ValueError:
        return None
    if not files:
        return None
    constrained = False
    if "task/cgroup" in slurm.get("taskplugin", "").lower():
        try:
            cgroup = {k: v for record in _records(conf.parent / "cgroup.conf") for k, v in record.items()}
        except OSError:
            cgroup = {}
        constrained = cgroup.get("constraindevices", "no").lower() in ("yes", "true", "1")
    return NodeGpus(files, constrained)


def allocated_files(env: Mapping[str, str]) -> list[str] | None:
    """The device files of the GPUs ``CUDA_VISIBLE_DEVICES`` names, in its order, mapped through
    the Slurm allocation; None outside a Slurm allocation of GPUs, or where the mapping is not
    certain (entries that are UUIDs, an unreadable configuration): the caller then falls back."""
    ids_text = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if not ids_text or visible is None:
        return None
    try:
        ids = sorted(int(i) for i in ids_text.split(","))
    except ValueError:
        return None
    node = node_gpus(env)
    if node is None:
        return None
    files: list[str] = []
    for entry in (e.strip() for e in visible.split(",")):
        if not entry or entry.startswith("-"):
            break  # CUDA stops reading the list at the first entry that names no device
        if not entry.isdigit():
            return None
        index = int(entry)
        if node.constrained:  # the n-th of the job's own GPUs, in index order
            if index >= len(ids):
                break
            index = ids[index]
        if index >= len(node.files):
            return None
        if node.files[index] not in files:
            files.append(node.files[index])
    return files
