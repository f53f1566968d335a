"""Cache limits on real mounts: LRU eviction under a cap, open and pinned objects kept,
files too big for the cache (or a disk that fills up) served uncached and still verified,
the cache commands, and a mount racing the SDK's download on one cache."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.faults.test_fault_matrix import record
from tests.fs.conftest import blob_gets, run_cli
from tests.helpers import wait_for
from wandbfs.emulator.seed import publish

MiB = 1 << 20
FILES = {f"part{i}.bin": random.Random(100 + i).randbytes(3 * MiB + i) for i in range(6)}


@pytest.fixture(scope="module")
def six(emulator):
    publish(emulator.store, "acme", "dataset", "six-parts", FILES, ["production"], type_name="dataset")
    return "acme/dataset/six-parts/production"


def objects(cache: Path) -> dict[Path, int]:
    root = cache / "artifacts/obj"
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def md5_path(cache: Path, data: bytes) -> Path:
    h = hashlib.md5(data).hexdigest()
    return cache / "artifacts/obj/md5" / h[:2] / h[2:]


def no_temps(cache: Path) -> bool:
    tmp = cache / "artifacts/tmp"
    return not tmp.exists() or not any(tmp.iterdir())


@pytest.fixture
def tmpfs(tmp_path):
    """A small filesystem of its own for the cache, so "disk full" is real."""
    made: list[Path] = []

    def make(size_mib: int) -> Path:
        d = tmp_path / f"tmpfs{len(made)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(d)], check=True)
        made.append(d)
        return d
    yield make
    for d in made:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_cap_evicts_least_recently_used_but_never_an_open_file(emu, mount, six, tmp_path):
    cache = tmp_path / "cache"
    cap = 10 * MiB
    m = mount("--cache-dir", str(cache), "--cache-max-size", "10M", "--no-warm")
    d = m.path / six
    with open(d / "part0.bin", "rb") as held:               # open for the whole test
        assert held.read(1000) == FILES["part0.bin"][:1000]
        for name in ["part1.bin", "part2.bin", "part3.bin", "part4.bin", "part5.bin"]:
            assert (d / name).read_bytes() == FILES[name]
            assert sum(objects(cache).values()) <= cap, objects(cache)
            assert md5_path(cache, FILES["part0.bin"]).exists(), "an open object was evicted"
        assert held.read() == FILES["part0.bin"][1000:]
    # the least recently used go first: the last two read are the ones left beside part0
    assert md5_path(cache, FILES["part5.bin"]).exists() and md5_path(cache, FILES["part4.bin"]).exists()
    assert not md5_path(cache, FILES["part1.bin"]).exists()
    # an evicted file is fetched again, right (once the kernel's copy of its pages is dropped)
    n = len(blob_gets(emu))
    with open(d / "part1.bin", "rb") as fh:
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert fh.read() == FILES["part1.bin"]
    assert len(blob_gets(emu)) > n
    assert "evicted" in m.log and no_temps(cache)
    record("cache cap 10 MiB, 7 reads of 3 MiB files, one held open", 7, 0,
           "all ok; cap never exceeded; the open file's object kept; LRU order")


def test_file_larger_than_the_cap_is_served_uncached(emu, mount, tmp_path):
    cache = tmp_path / "cache"
    m = mount("--cache-dir", str(cache), "--cache-max-size", "16M", "--no-warm")
    f = m.path / "acme/model/resnet50/v3/model.safetensors"
    data = _blob_of(emu, "resnet50", 3, "model.safetensors")
    expected = hashlib.sha256(data).hexdigest()
    out = subprocess.run(["sha256sum", str(f)], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == expected
    assert sum(objects(cache).values()) <= 16 * MiB and no_temps(cache)
    assert "without caching" in m.log
    # random reads into it work too, and stay uncached
    with open(f, "rb") as fh:
        for off in random.Random(5).sample(range(len(data) - 4096), 8):
            fh.seek(off)
            assert fh.read(4096) == data[off:off + 4096]
    record("64 MiB file, cache cap 16 MiB", 9, 0, "served uncached (sha256sum + 8 random reads ok)")


def _artifact(emu, collection: str, index: int):
    coll = next(c for c in emu.store.collections.values() if c.name == collection and c.kind == "portfolio")
    m = next(m for m in emu.store.memberships_of(coll.id) if m.version_index == index)
    return emu.store.artifacts[m.artifact_id]


def test_full_cache_disk_streams_without_caching(emu, mount, tmpfs, tmp_path):
    cache = tmpfs(24)
    m = mount("--cache-dir", str(cache), "--no-warm")
    f = m.path / "acme/model/resnet50/v3/model.safetensors"
    data = _blob_of(emu, "resnet50", 3, "model.safetensors")
    out = subprocess.run(["sha256sum", str(f)], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == hashlib.sha256(data).hexdigest()
    assert (m.path / "acme/model/resnet50/v3").is_dir() and no_temps(cache)   # alive, nothing left
    record("cache disk full (24 MiB tmpfs), 64 MiB file", 1, 0, "served uncached, sha256 ok")


def test_disk_filling_up_mid_download_switches_to_uncached(emu, mount, tmpfs, tmp_path):
    cache = tmpfs(80)
    m = mount("--cache-dir", str(cache), "--no-warm", "--part-size", "4")
    f = m.path / "acme/model/resnet50/v3/model.safetensors"
    data = _blob_of(emu, "resnet50", 3, "model.safetensors")
    emu.faults.set([{"route": "blob", "rate_bps": 8 * MiB}])          # slow enough to fill the disk meanwhile
    result: dict[str, str] = {}

    def reader() -> None:
        result["sha"] = hashlib.sha256(f.read_bytes()).hexdigest()
    t = threading.Thread(target=reader)
    t.start()
    downloads = (cache / "artifacts/tmp", cache / "wandbfs-meta/partial/md5")   # a temp or a partial object
    wait_for(lambda: any(d.exists() and any(d.iterdir()) for d in downloads), timeout=20,
             what="the download to start")
    with open(cache / "ballast", "wb") as b:   # someone else fills the disk
        try:
            while True:
                b.write(b"\0" * MiB)
        except OSError:
            pass
    emu.faults.clear()
    t.join(120)
    assert not t.is_alive() and result.get("sha") == hashlib.sha256(data).hexdigest()
    assert "filled up during the download" in m.log
    (cache / "ballast").unlink()
    assert no_temps(cache) and (m.path / "acme/model/resnet50/v3/model.safetensors").stat().st_size == len(data)
    record("cache disk fills up mid-download (80 MiB tmpfs)", 1, 0, "switched to uncached, sha256 ok")


def _blob_of(emu, collection: str, index: int, path: str) -> bytes:
    import base64
    entry = emu.store.manifest(_artifact(emu, collection, index))["contents"][path]
    return emu.store.blobs.get(base64.b64decode(entry["digest"]).hex())


def test_pinned_version_survives_eviction_and_cache_commands(emu, mount, six, tmp_path, mount_env):
    cache = tmp_path / "cache"
    env = dict(mount_env)
    name = "acme/wandb-registry-dataset/six-parts:production"
    r = run_cli(["pin", name, "--cache-dir", str(cache), "-q"], env)
    assert r.returncode == 0, r.stderr
    assert "pinned acme/wandb-registry-dataset/six-parts:v0 (via production): 6 files" in r.stdout
    assert all(md5_path(cache, d).exists() for d in FILES.values())            # pin fetched them
    listing = run_cli(["pin", "--cache-dir", str(cache)], env).stdout
    assert "six-parts:v0 (via production)" in listing
    # a mount whose cap is smaller than the pinned bytes: other files go uncached, pins stay
    m = mount("--cache-dir", str(cache), "--cache-max-size", "8M", "--no-warm")
    bert = m.path / "acme/model/bert-base/v1"
    for p in sorted(bert.rglob("*")):
        if p.is_file():
            p.read_bytes()
    assert all(md5_path(cache, d).exists() for d in FILES.values())
    stats = run_cli(["cache", "stats", "--cache-dir", str(cache), "--json"], env)
    import json
    s = json.loads(stats.stdout)
    assert s["pinned_versions"] == 1 and s["pinned_objects"] == 6
    assert s["pinned_bytes"] == sum(len(d) for d in FILES.values())
    assert s["objects"] == len(objects(cache)) and s["bytes"] == sum(objects(cache).values())
    # prune to nothing: pinned and open objects stay
    with open(m.path / six / "part2.bin", "rb") as held:
        held.read(10)
        r = run_cli(["cache", "prune", "--cache-dir", str(cache), "--max-size", "0", "-q"], env)
        assert r.returncode == 2 and "still over the limit" in r.stderr   # pinned bytes remain
        assert all(md5_path(cache, d).exists() for d in FILES.values())
    r = run_cli(["unpin", "acme/wandb-registry-dataset/six-parts:production", "--cache-dir", str(cache)], env)
    assert r.returncode == 0 and "unpinned acme/wandb-registry-dataset/six-parts:v0" in r.stdout
    with open(m.path / six / "part2.bin", "rb") as held:
        held.read(10)
        r = run_cli(["cache", "clear", "--cache-dir", str(cache), "--yes", "-q"], env)
        assert r.returncode == 0 and "kept 1 in use" in r.stdout, r.stdout
        assert set(objects(cache)) == {md5_path(cache, FILES["part2.bin"])}
        assert held.read() == FILES["part2.bin"][10:]
    assert (m.path / six / "part3.bin").read_bytes() == FILES["part3.bin"]      # fetched again
    r = run_cli(["unpin", "acme/wandb-registry-dataset/six-parts:v0", "--cache-dir", str(cache)], env)
    assert r.returncode == 1 and "is not pinned" in r.stderr


def test_mount_and_sdk_download_racing_on_one_object(emu, mount, tmp_path, mount_env):
    """The SDK takes no lock; both write private temps and rename: no torn object, right bytes."""
    cache = Path(mount_env["WANDB_CACHE_DIR"])
    m = mount("--cache-dir", str(cache), "--no-warm")
    data = _blob_of(emu, "resnet50", 3, "model.safetensors")
    f = m.path / "acme/model/resnet50/v3/model.safetensors"
    script = ("import wandb,sys; a=wandb.Api().artifact('acme/wandb-registry-model/resnet50:v3');"
              "print(a.download(root=sys.argv[1]))")
    out = tmp_path / "sdk-download"
    results: dict[str, object] = {}

    def mount_read() -> None:
        results["mount"] = hashlib.sha256(f.read_bytes()).hexdigest()
    t = threading.Thread(target=mount_read)
    t.start()
    sdk = subprocess.run([sys.executable, "-c", script, str(out)], env=mount_env, capture_output=True,
                         text=True, timeout=300)
    t.join(120)
    assert sdk.returncode == 0, sdk.stderr[-2000:]
    want = hashlib.sha256(data).hexdigest()
    assert results["mount"] == want
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == want
    obj = md5_path(cache, data)
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == want and no_temps(cache)
    # and the mount still serves it (from the cache now)
    assert hashlib.sha256(f.read_bytes()).hexdigest() == want
    record("mount read + SDK artifact.download() of one 64 MiB object at once", 3, 0,
           "both right; one intact object in the cache")
