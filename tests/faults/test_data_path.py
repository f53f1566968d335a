"""The data path against a misbehaving storage server: bytes land only where they belong.

A 206 for another range (or another object size) is fetched again, never written at the
offset asked for; a 200 to a ranged GET is read from the part's start; a temp file removed
under a download (the SDK's cache cleanup) does not fail it; a stalled part fails within
``--read-timeout`` in all, not per attempt; a manifest entry no file system can show hides
only itself. First the ranged GETs alone (``RangeGetter`` against the emulator, no mount),
then the same faults through real mounts.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import random
import threading
import time
from pathlib import Path

import pytest
import trio
import urllib3

from tests.faults.test_fault_matrix import _no_temps, _read, record
from tests.fs.conftest import blob_gets
from tests.helpers import wait_for
from wandbfs.cache.store import ObjectCache
from wandbfs.emulator.seed import publish
from wandbfs.model.manifest import ManifestEntry
from wandbfs.fill.errors import FetchError
from wandbfs.fill.getter import FetchPolicy, FetchStats, RangeGetter
from wandbfs.fill.item import FillItem

MiB = 1 << 20
DATA = random.Random(11).randbytes(5 * MiB + 321)
BIG = "acme/model/resnet50/v3/model.safetensors"       # 64 MiB in the demo data


# ---- ranged GETs alone ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blob(emulator):
    md5hex = emulator.store.blobs.put(DATA)
    entry = ManifestEntry(path="blob.bin", digest=base64.b64encode(bytes.fromhex(md5hex)).decode(),
                          size=len(DATA), md5_hex=md5hex)
    return entry, emulator.signer.sign(emulator.url, f"/_storage/blobs/{md5hex}")


def _getter(entry: ManifestEntry, url: str, **policy: float) -> tuple[RangeGetter, FetchStats]:
    stats = FetchStats()
    p = FetchPolicy(part_size=MiB, backoff_base=0.01, **policy)  # type: ignore[arg-type]
    return RangeGetter(entry, p, lambda refresh: url, urllib3.PoolManager(retries=False), stats), stats


def _fetch(getter: RangeGetter, start: int, end: int) -> list[tuple[int, bytes]]:
    """Every (offset, bytes) the getter hands over, each checked against the real object."""
    writes: list[tuple[int, bytes]] = []

    def sink(pos: int, chunk: bytes) -> None:
        assert start <= pos and pos + len(chunk) <= end, f"write at {pos} outside the part {start}-{end}"
        assert chunk == DATA[pos:pos + len(chunk)], f"wrong bytes written at {pos}"
        writes.append((pos, chunk))
    getter.fetch(start, end, sink)
    return writes


def _part_gets(emu) -> list:
    return [e for e in emu.log.entries("blob") if e.method == "GET"]


@pytest.mark.parametrize("fault", [
    {"wrong_range": 4096}, {"wrong_range": -1000}, {"wrong_range": 3 * MiB},   # shifted (partly past the end)
    {"wrong_size": len(DATA) + 1}, {"wrong_size": 2 * MiB},                    # another object's size
])
def test_a_206_for_another_range_or_object_is_fetched_again_not_written(emu, blob, fault):
    entry, url = blob
    getter, stats = _getter(entry, url)
    emu.faults.set([dict(route="blob", times=2, **fault)])
    writes = _fetch(getter, 2 * MiB, 3 * MiB)
    assert b"".join(c for _, c in writes) == DATA[2 * MiB:3 * MiB]
    assert stats.retries == 2 and stats.bytes_downloaded == MiB            # nothing of the bad ones kept
    gets = _part_gets(emu)
    assert [e.fault for e in gets] == [True, True, False]
    assert all(e.range == f"bytes={2 * MiB}-{3 * MiB - 1}" for e in gets)  # the same part, asked again


def test_a_wrong_range_every_time_fails_the_part_with_nothing_written(emu, blob):
    entry, url = blob
    getter, _ = _getter(entry, url, attempts=4)
    emu.faults.set([{"route": "blob", "wrong_range": 1}])
    with pytest.raises(FetchError, match="after 4 attempts: Content-Range 'bytes 1048577-2097152/5243201' "
                                         "for a request of bytes 1048576-2097151"):
        _fetch(getter, MiB, 2 * MiB)
    assert len(_part_gets(emu)) == 4


@pytest.mark.parametrize("times", [1, None])
def test_a_200_to_a_ranged_get_is_read_from_the_parts_start(emu, blob, times, caplog):
    entry, url = blob
    getter, stats = _getter(entry, url)
    emu.faults.set([{"route": "blob", "ignore_range": True, "times": times}])
    with caplog.at_level(logging.WARNING, logger="wandbfs.fill.getter"):
        parts = [_fetch(getter, s, min(s + MiB, len(DATA))) for s in range(0, len(DATA), MiB)]
    assert b"".join(c for part in parts for _, c in part) == DATA
    assert stats.retries == 0
    assert sum(e.status == 200 for e in _part_gets(emu)) == (1 if times else len(parts))
    assert [r.getMessage() for r in caplog.records] == [
        "storage ignored Range for blob.bin (HTTP 200, the whole object): reading each part from the start "
        "of the body"]                                                       # said once per object


def test_a_retry_resumes_after_the_last_byte(emu, blob):
    entry, url = blob
    getter, stats = _getter(entry, url)
    emu.faults.set([{"route": "blob", "truncate": 300_000, "times": 1}])   # a FIN: the bytes before it arrive
    writes = _fetch(getter, MiB, 2 * MiB)
    assert b"".join(c for _, c in writes) == DATA[MiB:2 * MiB]
    resumed = _part_gets(emu)[1].range
    assert resumed is not None and int(resumed.split("=")[1].split("-")[0]) > MiB   # not from the part's start
    assert stats.bytes_downloaded == MiB


def test_a_stall_fails_within_the_read_timeout_in_all(emu, blob):
    entry, url = blob
    getter, _ = _getter(entry, url, read_timeout=1)
    emu.faults.set([{"route": "blob", "stall_s": 8}])
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=r"no bytes from storage for 1\.\ds \(read timeout 1s, 2 attempts\)"):
        _fetch(getter, 0, MiB)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 2.0, elapsed                        # was attempts x read_timeout: 5 s here
    assert len(_part_gets(emu)) == 2                            # one fresh connection within the deadline


def test_one_stall_is_survived_by_a_fresh_connection(emu, blob):
    entry, url = blob
    getter, stats = _getter(entry, url, read_timeout=2)
    emu.faults.set([{"route": "blob", "stall_s": 8, "times": 1}])
    t0 = time.monotonic()
    assert b"".join(c for _, c in _fetch(getter, 0, MiB)) == DATA[:MiB]
    assert time.monotonic() - t0 < 2 and stats.retries == 1      # after half the read timeout


# ---- a temp file removed under the download ----------------------------------------------------

class _MemoryGetter:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def fetch(self, start: int, end: int, sink) -> None:
        sink(start, self.data[start:end])


class _TempsRemovedAtCommit(ObjectCache):
    """The race a check before the rename cannot see: the temp goes just before the rename."""

    removals = 0

    def commit(self, tmp_path, entry, **kw):  # type: ignore[override]
        if self.removals:
            self.removals -= 1
            os.unlink(tmp_path)
        return super().commit(tmp_path, entry, **kw)


def _fill(cache: ObjectCache, data: bytes) -> FillItem:
    entry = ManifestEntry(path="t.bin", digest=base64.b64encode(hashlib.md5(data).digest()).decode(),
                          size=len(data), md5_hex=hashlib.md5(data).hexdigest())

    async def main() -> FillItem:
        item = FillItem(entry, cache, FetchPolicy(part_size=MiB), lambda r: "", None, FetchStats(),  # type: ignore[arg-type]
                        lambda workers, cancelled: _MemoryGetter(data))
        async with trio.open_nursery() as n:
            for _ in range(item.workers):
                n.start_soon(trio.to_thread.run_sync, item.run_worker)
            n.start_soon(trio.to_thread.run_sync, item.run_hasher)
        return item
    return trio.run(main)


@pytest.mark.parametrize("removals", [1, 3])
def test_a_temp_removed_just_before_the_rename_is_replaced(tmp_path, removals, caplog):
    cache = _TempsRemovedAtCommit(tmp_path / "c")
    cache.removals = removals
    with caplog.at_level(logging.WARNING, logger="wandbfs.fill.item"):
        item = _fill(cache, DATA)
    assert item.error is None and item.path is not None and item.path.read_bytes() == DATA
    assert sum("was removed during its download" in r.getMessage() for r in caplog.records) == removals
    assert _no_temps(tmp_path / "c")


def test_a_temp_that_keeps_vanishing_fails_after_a_bound(tmp_path):
    cache = _TempsRemovedAtCommit(tmp_path / "c")
    cache.removals = FillItem.MAX_TEMP_MOVES + 1
    item = _fill(cache, DATA)
    assert isinstance(item.error, FetchError) and "was removed 4 times" in str(item.error)
    assert item.path is None and _no_temps(tmp_path / "c")


# ---- through real mounts -----------------------------------------------------------------------

def _want(path: Path, emu) -> bytes:   # the mount needs --xattrs
    return emu.store.blobs.get(base64.b64decode(os.getxattr(path, "user.wandb.digest")).hex())


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


RANGE_FAULTS = {
    "206 with a Content-Range shifted by 4 KiB": {"wrong_range": 4096},
    "206 with a Content-Range shifted back 1 MiB": {"wrong_range": -MiB},
    "206 whose Content-Range names another object size": {"wrong_size": 1234},
    "200 (the whole object) to a ranged GET": {"ignore_range": True},
}


MODES = {"cached": (), "uncached (cache cap 16 MiB)": ("--cache-max-size", "16M")}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(RANGE_FAULTS))
def test_wrong_ranges_serve_no_wrong_byte_and_complete(name, mode, emu, mount, fresh_cache):
    """64 MiB in 1 MiB parts; the first 4 answers are wrong: cached, the first parts asked
    for are 0-3, each answered wrong once; uncached, block 0 is answered wrong 4 times (one
    short of the attempts). A reader that stops early, inside parts 0 and 1 (where a wrong
    range used to be written at the requested offset), then a whole read."""
    m = mount("--cache-dir", str(fresh_cache), "--no-warm", "--no-lineage", "--part-size", "1", "--xattrs", *MODES[mode])
    path = m.path / BIG
    want = _want(path, emu)
    emu.faults.set([dict(route="blob", times=4, **RANGE_FAULTS[name])])
    t0 = time.monotonic()
    with open(path, "rb") as f:
        early = os.pread(f.fileno(), MiB, MiB // 2)                  # stops early, never reaches EOF
    data, outcome = _read(path)
    elapsed = time.monotonic() - t0
    wrong = sum(a != b for a, b in zip(early, want[MiB // 2:3 * MiB // 2]))
    assert early == want[MiB // 2:3 * MiB // 2] and wrong == 0
    assert _sha(data) == _sha(want), outcome
    assert [r["hits"] for r in emu.faults.list()] == [4]              # every wrong answer was seen
    faulted = {e.range for e in blob_gets(emu) if e.fault}
    # uncached: block 0; cached (adaptive fill): the early read's own range, asked for alone
    first = {f"bytes=0-{MiB - 1}"} if MODES[mode] else {f"bytes={MiB // 2}-{3 * MiB // 2 - 1}"}
    assert first <= faulted                                           # under the early read
    if "ignore_range" not in RANGE_FAULTS[name]:
        assert "Content-Range" in m.log                                # each one was retried, not failed
    wait_for(lambda: _no_temps(fresh_cache), timeout=10, what="no temp files")
    objects = [p for p in (fresh_cache / "artifacts/obj").rglob("*") if p.is_file()]
    assert bool(objects) == (not MODES[mode])                          # the mode is the one named
    record(f"{name}: the first 4 answers, 1 MiB parts of a 64 MiB file, {mode}", 2, wrong,
           f"an early partial read and a whole read both right ({elapsed:.1f}s)")


@pytest.mark.timeout(180)
def test_a_temp_removed_by_the_sdks_cleanup_mid_download_does_not_fail_the_read(emu, mount, fresh_cache):
    from wandb.sdk.artifacts.artifact_file_cache import ArtifactFileCache

    # --fill whole: the download goes to a temp file in artifacts/tmp, where the SDK's cleanup
    # reaches (an adaptive fill's partial object lives outside artifacts/, out of its reach)
    m = mount("--cache-dir", str(fresh_cache), "--no-warm", "--no-lineage", "--part-size", "1", "--xattrs",
              "--fill", "whole")
    path = m.path / BIG
    want = _want(path, emu)
    emu.faults.set([{"route": "blob", "rate_bps": 4 * MiB}])          # 4 parts at a time: ~4 s in all
    got: dict[str, object] = {}
    reader = threading.Thread(target=lambda: got.update(zip(("data", "outcome"), _read(path))))
    t0 = time.monotonic()
    reader.start()
    tmp = fresh_cache / "artifacts/tmp"
    wait_for(lambda: tmp.exists() and any(os.stat(p).st_blocks > 0 for p in tmp.iterdir()), timeout=30,
             what="the download to have written some bytes")
    reclaimed = ArtifactFileCache(fresh_cache / "artifacts").cleanup(target_size=1 << 60, remove_temp=True)
    assert reclaimed == 64 * MiB and not any(tmp.iterdir())         # the SDK removed our temp (its full size)
    reader.join(timeout=120)
    elapsed = time.monotonic() - t0
    assert _sha(got.get("data")) == _sha(want), got.get("outcome")  # type: ignore[arg-type]
    assert "was removed during its download" in m.log
    emu.faults.clear()
    obj = fresh_cache / "artifacts/obj/md5" / hashlib.md5(want).hexdigest()[:2] / hashlib.md5(want).hexdigest()[2:]
    assert obj.stat().st_size == len(want) and _no_temps(fresh_cache)
    assert sum(e.bytes_out for e in blob_gets(emu)) == len(want)     # not one byte fetched twice
    record("the SDK's cache cleanup removes the temp file mid-download (64 MiB)", 1, 0,
           f"the read completes with the right bytes ({elapsed:.1f}s); nothing fetched twice")


@pytest.mark.timeout(120)
def test_a_stalled_blob_is_eio_within_the_read_timeout(emu, mount, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache), "--no-warm", "--no-lineage", "--read-timeout", "3", "--xattrs")
    path = m.path / "acme/model/resnet50/v2/model.safetensors"
    assert path.stat().st_size > 0                                   # the name is resolved before the stall
    emu.faults.set([{"route": "blob", "stall_s": 20}])
    t0 = time.monotonic()
    data, outcome = _read(path)
    elapsed = time.monotonic() - t0
    assert data is None and outcome == "EIO"
    assert 3 <= elapsed <= 2 * 3, f"EIO after {elapsed:.1f}s"        # was 5 x 3 s plus backoff
    assert "no bytes from storage for 3" in m.log
    emu.faults.clear()
    assert _read(path)[0] == _want(path, emu)                         # alive, and right once storage answers
    record("blob stalls on every request (--read-timeout 3)", 2, 0, f"EIO after {elapsed:.1f}s, then ok")


@pytest.fixture(scope="module")
def huge_entry_version(emulator):
    """One version whose manifest has an entry of 2^63 bytes (one more than st_size can hold)."""
    store = emulator.store

    def entry(data: bytes) -> dict[str, object]:
        return {"digest": base64.b64encode(bytes.fromhex(store.blobs.put(data))).decode(), "size": len(data)}
    contents = {"ok.txt": entry(b"fine\n"), "sub/also.txt": entry(b"also\n"),
                "huge.bin": {**entry(b"small really"), "size": 2**63},
                "max.bin": {**entry(b"x"), "size": 2**63 - 1}}
    body = json.dumps({"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                       "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents}).encode()
    art = store.create_artifact(entity="alice", project="demo-source", collection="huge-source",
                                type_name="model", digest=hashlib.md5(body).hexdigest(), metadata="{}")
    store.set_manifest(art.id, body)
    store.commit_artifact(art.id)
    store.link(art.id, store.orgs["acme"].entity, "wandb-registry-model", "huge", ["production"])
    return "acme/model/huge/production"


def test_a_size_past_2_63_hides_only_its_entry(emu, mount, huge_entry_version):
    m = mount("--no-warm", "--no-lineage")
    d = m.path / huge_entry_version
    assert sorted(os.listdir(d)) == ["max.bin", "ok.txt", "sub"]     # readdir works; huge.bin is absent
    assert (d / "max.bin").stat().st_size == 2**63 - 1              # the largest size there is, shown
    assert (d / "ok.txt").read_bytes() == b"fine\n" and (d / "sub/also.txt").read_bytes() == b"also\n"
    with pytest.raises(OSError) as e:
        (d / "huge.bin").stat()
    assert e.value.errno == errno.ENOENT
    assert "skipping entry 'huge.bin': size out of range: 9223372036854775808" in m.log
    record("manifest entry of 2^63 bytes (next to one of 2^63-1)", 3, 0,
           "that entry hidden (ENOENT), logged by name; the rest of the version listed and read")
