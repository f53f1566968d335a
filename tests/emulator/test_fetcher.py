"""The fetcher against the emulator's storage, with injected faults (no mount needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from tests.helpers import wait_for
from wandbfs.cache.store import ObjectCache
from wandbfs.catalog.catalog import Catalog
from wandbfs.cache.eviction import CacheLimits, Evictor
from wandbfs.fill.errors import FetchError, NoSpace
from wandbfs.fill.fetcher import Fetcher, FetchPolicy, UncachedStream
from wandbfs.sdk.client import NotFound, WandbClient


def _run(emu, cache_dir: Path, body, policy: FetchPolicy | None = None, limits: CacheLimits | None = None,
         version: int = 0):
    async def main():
        catalog = Catalog(WandbClient())
        cache = ObjectCache(cache_dir)
        fetcher = Fetcher(cache, catalog.file_url,
                          policy=policy or FetchPolicy(backoff_base=0.01, read_timeout=2),
                          evictor=Evictor(cache, limits or CacheLimits()))
        detail = await catalog.version("acme", "model", "resnet50", version)
        try:
            async with trio.open_nursery() as nursery:
                fetcher.nursery = nursery
                return await body(fetcher, detail)
        finally:
            fetcher.close()
    return trio.run(main)


def _blob(emu, detail, path: str) -> bytes:
    return emu.store.blobs.get(detail.manifest.entries[path].md5_hex)


def _no_temps(cache_dir: Path) -> bool:
    tmp = cache_dir / "artifacts/tmp"
    return not tmp.exists() or not any(tmp.iterdir())


@pytest.mark.parametrize("fault", [
    {"status": 503, "times": 2}, {"status": 429, "times": 1}, {"status": 500, "times": 3},
    {"truncate": 1000, "times": 2}, {"reset_after": 5000, "times": 1}, {"stall_s": 4, "times": 1},
])
def test_transient_failures_are_retried(emu, tmp_path, fault):
    emu.faults.set([dict(route="blob", **fault)])

    async def body(fetcher, detail):
        path = await fetcher.ensure(detail, detail.manifest.entries["model.safetensors"])
        assert path.read_bytes() == _blob(emu, detail, "model.safetensors")
        return fetcher.stats
    stats = _run(emu, tmp_path / "c", body)
    assert stats.retries == fault["times"] and stats.downloads == 1, [(e.route, e.status, e.fault, e.bytes_out) for e in emu.log.entries() if e.route != "graphql"] + [emu.faults.list()]
    assert _no_temps(tmp_path / "c")


def test_persistent_failures_end_in_an_error_not_a_hang(emu, tmp_path):
    emu.faults.set([{"route": "blob", "status": 502}])

    async def body(fetcher, detail):
        with pytest.raises(FetchError):
            await fetcher.ensure(detail, detail.manifest.entries["config.json"])
        return fetcher.stats
    stats = _run(emu, tmp_path / "c", body, FetchPolicy(attempts=3, backoff_base=0.01))
    assert stats.retries == 3
    # The server logs a request just after answering it: wait for the third entry.
    wait_for(lambda: len(emu.log.entries("blob")) == 3, timeout=5, what="three blob requests")
    assert _no_temps(tmp_path / "c")


def test_corrupt_bytes_are_refetched_once_then_refused(emu, tmp_path):
    emu.faults.set([{"route": "blob", "corrupt": True, "times": 1}])

    async def body(fetcher, detail):
        entry = detail.manifest.entries["model.safetensors"]
        path = await fetcher.ensure(detail, entry)  # first copy corrupt, second good
        assert hashlib.md5(path.read_bytes()).hexdigest() == entry.md5_hex
        emu.faults.set([{"route": "blob", "corrupt": True}])
        with pytest.raises(FetchError):
            await fetcher.ensure(detail, detail.manifest.entries["tokenizer/vocab.txt"])
        assert fetcher.cache.lookup(detail.manifest.entries["tokenizer/vocab.txt"]) is None
        return fetcher.stats
    stats = _run(emu, tmp_path / "c", body)
    assert stats.digest_failures == 3 and _no_temps(tmp_path / "c")


def test_missing_object_is_not_found(emu, tmp_path):
    emu.faults.set([{"route": "blob", "status": 404}])

    async def body(fetcher, detail):
        with pytest.raises(NotFound):
            await fetcher.ensure(detail, detail.manifest.entries["config.json"])
    _run(emu, tmp_path / "c", body)


def test_concurrent_ensures_share_one_download_and_hits_cost_nothing(emu, tmp_path):
    async def body(fetcher, detail):
        entry = detail.manifest.entries["model.safetensors"]
        paths = []

        async def one():
            paths.append(await fetcher.ensure(detail, entry))
        async with trio.open_nursery() as n:
            for _ in range(16):
                n.start_soon(one)
        assert len(set(paths)) == 1
        emu.log.clear()
        await fetcher.ensure(detail, entry)
        assert emu.log.entries() == []
        return fetcher.stats
    stats = _run(emu, tmp_path / "c", body)
    assert stats.downloads == 1


def test_no_room_in_the_cache_serves_the_file_uncached_and_verified(emu, tmp_path):
    """A cap smaller than the file: nothing can be evicted to fit it, so it is streamed."""
    async def body(fetcher, detail):
        entry = detail.manifest.entries["model.safetensors"]
        want = _blob(emu, detail, "model.safetensors")
        got = await fetcher.open_object(detail, entry)
        assert isinstance(got, UncachedStream)
        # out of order, then the tail: the skipped part is hashed before the EOF read answers
        mid = await got.read(3 << 20, 1 << 20)
        tail = await got.read(len(want) - 1000, 4096)
        head = await got.read(0, 100)
        assert (mid, tail, head) == (want[3 << 20: 4 << 20], want[-1000:], want[:100]) and got.verified
        with pytest.raises(NoSpace):
            await fetcher.ensure(detail, entry)   # strict callers (prefetch) are told, not fed
        return fetcher.stats
    stats = _run(emu, tmp_path / "c", body, FetchPolicy(part_size=1 << 20, backoff_base=0.01),
                 limits=CacheLimits(max_size=1 << 20), version=3)
    assert stats.uncached == 1 and stats.downloads == 0
    assert not (tmp_path / "c/artifacts/obj").exists() or not any((tmp_path / "c/artifacts/obj").rglob("*"))
    assert _no_temps(tmp_path / "c")


def test_uncached_stream_refuses_corrupt_bytes_at_eof(emu, tmp_path):
    emu.faults.set([{"route": "blob", "corrupt": True, "times": 1}])

    async def body(fetcher, detail):
        entry = detail.manifest.entries["model.safetensors"]
        want = _blob(emu, detail, "model.safetensors")
        got = await fetcher.open_object(detail, entry)
        assert isinstance(got, UncachedStream)
        data = bytearray()
        with pytest.raises(FetchError, match="do not match"):
            while len(data) < len(want):
                data += await got.read(len(data), 4 << 20)
        # the stream starts over; the next pass is clean and ends verified
        data = bytearray()
        while len(data) < len(want):
            data += await got.read(len(data), 4 << 20)
        assert bytes(data) == want and got.verified
    _run(emu, tmp_path / "c", body, FetchPolicy(part_size=4 << 20, backoff_base=0.01),
         limits=CacheLimits(max_size=1 << 20), version=3)
