"""The reference's compiled kernels as a GPU worker sees them: through Triton's own cache lookup,
read-only, openable by name but not listable, and nothing one worker compiles reaching the next.

The manager is Triton's (real Triton, this venv's); the sandbox is the real bubblewrap. There is
no GPU here, so no kernel is compiled: the files are put where Triton's FileCacheManager puts them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from grader import gpu_cache
from grader.sandbox.client import launch
from grader.sandbox.launchers import REFERENCE_KERNELS, worker_env
from grader.sandbox.tiers import probe

pytest.importorskip("triton")
from triton.runtime.cache import FileCacheManager  # noqa: E402

from grader.sandbox.boot.kernel_cache import REFERENCE_ENV, ReadThroughCacheManager  # noqa: E402

KEY = "R2VGB5TPGS4DP3VPMSNXWNTJ3QQFP6IOJBM5RFFSTCTBLZMBFGLA"  # a base32 key, as Triton names its folders


def reference_folder(root: Path, key: str = KEY) -> Path:
    """A reference folder as the grader's process leaves it: a kernel group written by Triton's own manager."""
    folder = root / "reference"
    folder.mkdir()
    os.chmod(folder, gpu_cache.NOT_LISTABLE)
    os.environ["TRITON_CACHE_DIR"] = str(folder)
    try:
        m = FileCacheManager(key)
        paths = {name: m.put(data, name) for name, data in (("k.json", '{"name": "k"}'), ("k.cubin", b"\x7fELF"))}
        m.put_group("k.json", paths)
    finally:
        del os.environ["TRITON_CACHE_DIR"]
    return folder


def test_lookups_go_private_first_then_to_the_reference_and_writes_stay_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = reference_folder(tmp_path)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "private"))
    monkeypatch.setenv(REFERENCE_ENV, str(ref))
    m = ReadThroughCacheManager(KEY)
    group = m.get_group("k.json")
    assert group == {"k.json": str(ref / KEY / "k.json"), "k.cubin": str(ref / KEY / "k.cubin")}
    assert m.get_file("k.cubin") == str(ref / KEY / "k.cubin")
    written = m.put(b"mine", "k.cubin")  # a recompile lands in the private cache and wins from then on
    assert written.startswith(str(tmp_path / "private")) and m.get_file("k.cubin") == written
    assert (ref / KEY / "k.cubin").read_bytes() == b"\x7fELF"
    assert ReadThroughCacheManager("OTHERKEY").get_group("k.json") is None  # another kernel: a miss
    assert m.get_file("../" + KEY + "/k.json") is None  # names only, never paths
    (ref / KEY / "k.cubin").unlink()
    assert ReadThroughCacheManager(KEY).get_group("k.json") is None  # a group with a missing file is a miss


PROBE = r'''
import json, os
out = {"env": [os.environ.get("GRADER_REFERENCE_KERNELS"), os.environ.get("TRITON_CACHE_MANAGER")]}
try:
    os.listdir("/reference-kernels"); out["list"] = "listed"
except OSError as exc:
    out["list"] = type(exc).__name__
out["read"] = open("/reference-kernels/KEY/k.json").read()
for target in ("/reference-kernels/KEY/evil", "/reference-kernels/evil"):
    try:
        open(target, "w").write("x"); out.setdefault("write", []).append("written")
    except OSError as exc:
        out.setdefault("write", []).append(type(exc).__name__)
from triton.runtime.cache import get_cache_manager
import base64
m = get_cache_manager(base64.b32decode(b"KEY" + b"=" * (-len(b"KEY") % 8)).hex())
out["manager"] = type(m).__name__
out["group"] = m.get_group("k.json")
out["private_before"] = os.path.exists("/tmp/triton/MINE/mine.cubin")
os.makedirs("/tmp/triton/MINE", exist_ok=True)
open("/tmp/triton/MINE/mine.cubin", "w").write("a student's kernel")
raise RuntimeError("PROBE" + json.dumps(out))
'''.replace("KEY", KEY)


def run_probe(launcher, folder: Path, source: str) -> dict:
    sub = folder / "sub"
    sub.mkdir(exist_ok=True)
    os.chmod(sub, 0o755)
    path = sub / "probe.py"
    path.write_text(source)
    os.chmod(path, 0o644)
    init = {"op": "init", "module": "probe", "functions": [], "imports": ["numpy", "triton"], "threads": 1}
    deadline = time.monotonic() + 120
    worker = launch(launcher, sys.executable, path, worker_env({}, 1), launcher.limits(4096, True), init, deadline)
    try:
        reply = worker.receive(deadline).header
    finally:
        worker.kill()
    message = reply["error"]["message"]
    assert message.startswith("PROBE"), message
    return json.loads(message[len("PROBE"):])


def test_a_gpu_worker_reads_the_reference_by_name_only_and_keeps_its_own_compiles(tmp_path: Path) -> None:
    try:
        probe.cache_clear()
        base = probe(force="bubblewrap")
    except RuntimeError as exc:
        pytest.skip(f"bubblewrap cannot start here: {exc}")
    finally:
        probe.cache_clear()
    import dataclasses

    os.chmod(tmp_path, 0o755)
    ref = reference_folder(tmp_path)
    launcher = dataclasses.replace(base, gpu=True, reference_kernels=str(ref))
    first = run_probe(launcher, tmp_path, PROBE)
    assert first["env"] == [REFERENCE_KERNELS, "kernel_cache:ReadThroughCacheManager"]
    assert first["list"] == "PermissionError"  # the folder cannot be listed...
    assert first["read"] == '{"name": "k"}'  # ...but a kernel whose name the worker knows can be read
    assert len(first["write"]) == 2 and "written" not in first["write"]  # read-only, in its folders too
    assert first["manager"] == "ReadThroughCacheManager"  # Triton's own lookup goes through it
    assert first["group"] == {"k.json": f"{REFERENCE_KERNELS}/{KEY}/k.json", "k.cubin": f"{REFERENCE_KERNELS}/{KEY}/k.cubin"}
    assert not first["private_before"]
    second = run_probe(launcher, tmp_path, PROBE)  # the next student: nothing of the first one's cache
    assert not second["private_before"]
    assert sorted(p.name for p in (ref / KEY).iterdir()) == ["__grp__k.json", "k.cubin", "k.json"]
    plain = run_probe(dataclasses.replace(base, gpu=True), tmp_path, PROBE.replace('out["read"] =', 'out["read"] = None and'))
    assert plain["env"] == [None, None] and plain["list"] == "FileNotFoundError" and plain["manager"] == "FileCacheManager"
