"""A cache directory on a read-only filesystem (a pre-filled cache bind-mounted read-only
into a container): cached objects are served from it, the others are streamed without
being cached, and the log says so once for the mount, not once per file."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from tests.faults.test_fault_matrix import record
from tests.fs.conftest import blob_gets
from wandbfs.emulator.seed import publish

MiB = 1 << 20
FILES = {"weights.bin": random.Random(11).randbytes(3 * MiB + 17),
         "config.json": b'{"hidden": 64}\n',
         "other.bin": random.Random(12).randbytes(2 * MiB + 5),
         "tokenizer.json": random.Random(13).randbytes(30_000)}
CACHED = ("weights.bin", "config.json")         # read by the first mount, so in the cache
UNCACHED = ("other.bin", "tokenizer.json")


@pytest.fixture(scope="module")
def ro_version(emulator):
    publish(emulator.store, "acme", "model", "ro-cache", FILES, ["production"])
    return "acme/model/ro-cache/v0"


def _objects(cache: Path) -> set[Path]:
    return {p.relative_to(cache) for p in (cache / "artifacts/obj").rglob("*") if p.is_file()}


def _dead_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


@pytest.mark.parametrize("verify", ["stream", "strict"])
@pytest.mark.timeout(180)
def test_read_only_cache_serves_cached_files_and_streams_the_rest(emu, mount, ro_version, tmp_path,
                                                                  read_only_view, verify):
    cache = tmp_path / "cache"
    first = mount("--cache-dir", str(cache), "--part-size", "1", "--no-warm", "--no-lineage")
    for name in CACHED:
        assert (first.path / ro_version / name).read_bytes() == FILES[name]
    r = first.unmount()
    assert r.returncode == 0, r.stderr
    filled = _objects(cache)
    assert len(filled) == len(CACHED)
    kept = {p.name for p in (cache / "wandbfs-meta/versions").rglob("v0.*")}
    assert kept == {"v0.json", "v0.manifest"}, kept               # the version, kept for outages
    # A temp file a killed daemon left behind: startup's cleanup must not fail on it.
    orphan = cache / "artifacts/tmp" / f"wandbfs-{_dead_pid()}-leftover"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"x")

    ro = read_only_view(cache)
    with pytest.raises(OSError):
        (ro / "probe").write_bytes(b"")                          # really read-only
    m = mount("--cache-dir", str(ro), "--part-size", "1", "--verify", verify, "--no-lineage")
    root = m.path / ro_version
    assert sorted(os.listdir(root)) == sorted(FILES)
    emu.log.clear()
    for name in CACHED:                                          # from the cache: no blob GET
        assert (root / name).read_bytes() == FILES[name]
    assert blob_gets(emu) == []
    for name in UNCACHED:                                        # streamed from storage, right
        assert hashlib.sha256((root / name).read_bytes()).digest() == hashlib.sha256(FILES[name]).digest()
    with open(root / "other.bin", "rb", buffering=0) as f:       # random reads of a streamed file
        for off in random.Random(1).sample(range(len(FILES["other.bin"])), 5):
            assert os.pread(f.fileno(), 5000, off) == FILES["other.bin"][off:off + 5000]
    assert len(blob_gets(emu)) >= len(UNCACHED)
    assert _objects(cache) == filled and orphan.exists()         # nothing written
    log = m.log
    said = [line for line in log.splitlines() if "read-only" in line]
    assert len(said) == 1 and str(ro) in said[0], said
    assert "Traceback" not in log and "EIO" not in log, log[-3000:]
    meta = [line for line in log.splitlines() if "metadata" in line]
    assert len(meta) == 1 and "not writable" in meta[0], meta    # the metadata store, once
    warnings = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    assert warnings == [said[0], meta[0]] or warnings == [meta[0], said[0]], warnings   # not one per file
    record(f"read-only cache dir (ro bind mount), --verify {verify}: 2 cached + 2 uncached files",
           len(FILES) + 5, 0, "cached files from the cache, the others streamed; one log line")
