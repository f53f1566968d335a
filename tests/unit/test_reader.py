"""The object reader's bookkeeping without a mount: the real fetcher, fill and stream
against a loopback blob server whose responses the test holds back or corrupts.

What must hold: after ``close()`` the process keeps no descriptor into the cache, whatever
was in flight; references are counted once; one-part files are served only verified; a
read-only cache serves its objects and streams the rest."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing
import urllib3

from wandbfs.cache.store import ObjectCache
from wandbfs.cache.eviction import CacheLimits, Evictor
from wandbfs.fill.errors import BadBytes
from wandbfs.fill.fetcher import Fetcher, FetchPolicy, FillItem, close_if_idle
from wandbfs.model.manifest import ManifestEntry, parse_manifest
from wandbfs.fill.getter import FetchStats
from wandbfs.fill.reader import ObjectReader, ReadCounters

MiB = 1 << 20
BIG = random.Random(1).randbytes(3 * MiB + 123)      # three 1 MiB parts and a bit
SMALL = random.Random(2).randbytes(10_000)            # one part


def entry_of(data: bytes, path: str) -> ManifestEntry:
    digest = base64.b64encode(hashlib.md5(data).digest()).decode()
    return parse_manifest({"version": 1, "contents": {path: {"digest": digest, "size": len(data)}}}).entries[path]


class Blobs:
    """Blob storage on loopback: Range, a gate that holds every body back, bytes flipped."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.corrupt = False
        self.gets = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        blobs = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                blobs.gets += 1
                data = blobs.files[self.path.lstrip("/")]
                start, end, status = 0, len(data), 200
                m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if m:
                    start, end, status = int(m.group(1)), min(len(data), int(m.group(2)) + 1), 206
                body = data[start:end]
                if blobs.corrupt:
                    body = bytes(b ^ 0xFF for b in body[:1]) + body[1:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.end_headers()
                if not blobs.gate.wait(30):
                    return
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
        return Handler

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()


@pytest.fixture
def blobs() -> Iterator[Blobs]:
    b = Blobs()
    b.files.update({"big.bin": BIG, "small.bin": SMALL})
    yield b
    b.close()


def cache_fds(cache: ObjectCache) -> list[str]:
    """Descriptors this process holds into the cache directory (objects, temps, locks)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(cache.root) + "/"):
            out.append(target)
    return out


Body = Callable[[Fetcher, Callable[..., ObjectReader]], Awaitable[Any]]


def run(blobs: Blobs, cache: ObjectCache, body: Body, limits: CacheLimits | None = None) -> Any:
    """``body(fetcher, reader)`` in a trio run; ``reader(entry, strict=False)`` makes one."""
    async def main() -> Any:
        async def url_source(detail: Any, path: str, refresh: bool) -> str:
            return blobs.url(path)
        fetcher = Fetcher(cache, url_source, policy=FetchPolicy(part_size=MiB, backoff_base=0.01, read_timeout=5),
                          evictor=Evictor(cache, limits or CacheLimits()))
        counters = ReadCounters()

        def reader(entry: ManifestEntry, strict: bool = False) -> ObjectReader:
            return ObjectReader(fetcher, None, entry, strict=strict, counters=counters)  # type: ignore[arg-type]
        try:
            async with trio.open_nursery() as n:
                fetcher.nursery = n
                return await body(fetcher, reader), counters
        finally:
            fetcher.close()
    return trio.run(main)


async def until(cond: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll ``cond`` on the trio loop (threads the loop waits on count as blocked for
    ``wait_all_tasks_blocked``, so that cannot say a download has started)."""
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.005)


async def settle(fetcher: Fetcher, entry: ManifestEntry) -> None:
    """Wait for the object's fill (if any) to end or be parked (an adaptive fill nobody
    holds), and for its clean-up to run."""
    got = await fetcher.open_object(None, entry)  # type: ignore[arg-type]
    if isinstance(got, FillItem):
        await until(lambda: got.done.is_set() or got.parked, "the fill to end or park")
    await until(lambda: fetcher.stats.in_flight == 0, "the fill to end")


# ---- references and descriptors ---------------------------------------------------------

def test_a_fill_read_to_eof_is_promoted_to_the_cache_file_and_close_lets_go(blobs, tmp_path):
    cache = ObjectCache(tmp_path / "c")
    e = entry_of(BIG, "big.bin")

    async def body(fetcher, reader):
        r = reader(e)
        assert await r.read(0, 100) == BIG[:100] and r.source == "fill"
        assert await r.read(len(BIG) - 50, 100) == BIG[-50:]        # a probe of the end on its own:
        assert r.source == "fill" and r.tail_unverified              # served unverified, pages dropped
        assert await r.read(0, len(BIG) - 50) == BIG[:-50]           # everything: this one is verified
        assert r.source == "cache"                                   # promoted to the cache file
        assert await r.read(MiB, 10) == BIG[MiB:MiB + 10]
        await settle(fetcher, e)
        assert len(cache_fds(cache)) == 1                            # the reader's, nothing else
        r.close()
        r.close()                                                    # idempotent
        assert r.source is None and cache_fds(cache) == []
    _, counters = run(blobs, cache, body)
    assert counters.opens_missed == 1 and counters.opens_hit == 0
    assert counters.bytes_from_wandb == 150 + len(BIG) - 50 and counters.bytes_from_cache == 10


def test_close_during_a_read_in_flight_keeps_nothing(blobs, tmp_path):
    """The read is waiting for its range when the file is closed: it still answers, but the
    fill's descriptor goes when the fill ends and the cache file is never opened."""
    cache = ObjectCache(tmp_path / "c")
    e = entry_of(BIG, "big.bin")
    blobs.gate.clear()

    async def body(fetcher, reader):
        r = reader(e)
        got: list[bytes] = []

        async def read() -> None:
            got.append(await r.read(0, len(BIG)))                    # to EOF: waits for the digest
        async with trio.open_nursery() as n:
            n.start_soon(read)
            await until(lambda: r.source == "fill", "the read to attach to the fill")
            r.close()
            blobs.gate.set()
        assert got == [BIG] and r.source is None
        await settle(fetcher, e)
        assert cache_fds(cache) == []
        assert fetcher.cache.lookup(e) is not None                   # the fill itself completed
    run(blobs, cache, body)


def test_close_before_the_background_attach_ends_keeps_nothing(blobs, tmp_path):
    """open starts the attach in the background; the file can be closed before it is done
    (here: while a cached object written by someone else is being hashed)."""
    cache = ObjectCache(tmp_path / "c")
    e = entry_of(BIG, "big.bin")
    tmp = cache.new_temp()
    os.write(tmp[0], BIG)
    os.close(tmp[0])
    cache.commit(tmp[1], e)                       # in the cache, without our verified mark

    async def body(fetcher, reader):
        readers = [reader(e) for _ in range(8)]
        async with trio.open_nursery() as n:
            for r in readers:
                n.start_soon(r.start)
            await trio.sleep(0)
            for r in readers:
                r.close()
        assert all(r.source is None for r in readers) and cache_fds(cache) == []
        again = reader(e)
        assert await again.read(0, 5) == BIG[:5] and again.source == "cache" and again.hit
        again.close()
        assert cache_fds(cache) == []
    _, counters = run(blobs, cache, body)
    assert counters.opens_hit == 1       # the closed ones counted nothing


def test_a_read_after_close_opens_nothing(blobs, tmp_path):
    cache = ObjectCache(tmp_path / "c")
    e = entry_of(BIG, "big.bin")

    async def body(fetcher, reader):
        r = reader(e)
        r.close()
        with pytest.raises(Exception, match="closed"):
            await r.read(0, 10)
        await settle(fetcher, e)
        assert r.source is None and cache_fds(cache) == []
    run(blobs, cache, body)


def test_many_readers_of_one_fill_each_hold_one_reference(blobs, tmp_path):
    cache = ObjectCache(tmp_path / "c")
    e = entry_of(BIG, "big.bin")

    async def body(fetcher, reader):
        readers = [reader(e) for _ in range(16)]
        rng = random.Random(7)

        async def some_reads(r: ObjectReader) -> None:
            for _ in range(3):
                off = rng.randrange(len(BIG))
                assert await r.read(off, 5000) == BIG[off:off + 5000]
        async with trio.open_nursery() as n:
            for r in readers:
                n.start_soon(some_reads, r)
        await settle(fetcher, e)
        for r in readers[::2]:
            r.close()
        for r in readers[1::2]:
            assert await r.read(0, 10) == BIG[:10]
            r.close()
        assert cache_fds(cache) == []
    run(blobs, cache, body)


def test_a_finished_fill_released_before_done_was_set_is_closed(blobs, tmp_path):
    """A reader letting go after the hasher's "anyone still reading?" check but before
    ``done`` reaches the trio thread must not leave the fill's descriptor open for good."""
    cache = ObjectCache(tmp_path / "c")
    e = entry_of(SMALL, "small.bin")

    async def main() -> None:
        http = urllib3.PoolManager()
        item = FillItem(e, cache, FetchPolicy(), lambda refresh: blobs.url("small.bin"), http, FetchStats())
        item.acquire()                       # a reader holds it while the fill finishes
        item.run_worker()                    # on the trio thread: done.set cannot run meanwhile
        item.run_hasher()
        item.release()                       # the reader lets go: done is not set yet
        await item.done.wait()
        close_if_idle(item)                  # what the fetcher does once a fill has ended
        assert item.fd == -1 and cache_fds(cache) == []
        held = FillItem(e, cache, FetchPolicy(), lambda refresh: blobs.url("small.bin"), http, FetchStats())
        held.acquire()
        await trio.to_thread.run_sync(held.run_worker)
        await trio.to_thread.run_sync(held.run_hasher)
        close_if_idle(held)                  # still held: stays open for its reader
        assert held.fd >= 0 and held.pread(5, 0) == SMALL[:5]
        held.release()
        assert held.fd == -1 and cache_fds(cache) == []
    trio.run(main)


# ---- the uncached stream ------------------------------------------------------------------

def test_stream_users_are_counted_once_per_reader(blobs, tmp_path):
    cache = ObjectCache(tmp_path / "c")
    e = entry_of(BIG, "big.bin")

    async def body(fetcher, reader):
        a, b = reader(e), reader(e)
        assert await a.read(0, 10) == BIG[:10] and await b.read(MiB, 10) == BIG[MiB:MiB + 10]
        assert a.source == b.source == "stream"
        stream = fetcher.uncached(None, e)
        assert stream.users == 2
        a.close()
        a.close()
        assert stream.users == 1
        b.close()
        assert stream.users == 0 and fetcher.uncached(None, e) is not stream   # forgotten, blocks freed
    run(blobs, cache, body, limits=CacheLimits(max_size=MiB))


# ---- files of one part: verified before any byte is served -------------------------------

def test_a_one_part_file_with_bad_bytes_serves_none(blobs, tmp_path):
    cache = ObjectCache(tmp_path / "c")
    small, big = entry_of(SMALL, "small.bin"), entry_of(BIG, "big.bin")
    blobs.corrupt = True

    async def body(fetcher, reader):
        r = reader(small)
        assert r.whole
        with pytest.raises(BadBytes):
            await r.read(0, 10)             # not the bytes: the digest failed first
        gets = blobs.gets
        with pytest.raises(BadBytes):
            await r.read(100, 10)           # sticky: no refetch for the kernel's retry
        assert blobs.gets == gets and r.failed is not None
        r.close()
        many = reader(big)                  # several parts: ranges are served as they arrive
        assert not many.whole and len(await many.read(MiB, 10)) == 10   # (here: unverified, wrong)
        many.close()
        await settle(fetcher, big)
        assert cache_fds(cache) == []
    run(blobs, cache, body)


def test_a_one_part_file_is_verified_in_the_uncached_stream_too(blobs, tmp_path):
    cache = ObjectCache(tmp_path / "c")
    small = entry_of(SMALL, "small.bin")

    async def body(fetcher, reader):
        blobs.corrupt = True
        r = reader(small)
        with pytest.raises(BadBytes):
            await r.read(0, 10)
        r.close()
        blobs.corrupt = False
        ok = reader(small)
        assert await ok.read(100, 10) == SMALL[100:110] and ok.source == "stream"
        ok.close()
    run(blobs, cache, body, limits=CacheLimits(max_size=1000))


# ---- a read-only cache directory ----------------------------------------------------------

@pytest.mark.parametrize("strict", [False, True])
def test_a_read_only_cache_serves_hits_and_streams_misses(blobs, tmp_path, read_only_view, caplog, strict):
    filled = ObjectCache(tmp_path / "c")
    big, small = entry_of(BIG, "big.bin"), entry_of(SMALL, "small.bin")
    tmp = filled.new_temp()
    os.write(tmp[0], BIG)
    os.close(tmp[0])
    filled.commit(tmp[1], big)                     # cached (by the SDK, say: no verified mark)
    cache = ObjectCache(read_only_view(filled.root))
    caplog.set_level(logging.DEBUG)

    async def body(fetcher, reader):
        gets = blobs.gets
        hit = reader(big, strict)
        assert await hit.read(MiB, 10) == BIG[MiB:MiB + 10] and hit.source == "cache"
        assert blobs.gets == gets                  # no lock file, no download
        for _ in range(2):
            miss = reader(small, strict)
            assert await miss.read(5, 10) == SMALL[5:15] and miss.source == "stream"
            miss.close()
        hit.close()
        assert cache.read_only and cache_fds(cache) == []
    _, counters = run(blobs, cache, body)
    said = [r for r in caplog.records if "read-only" in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(said) == 1 and str(cache.root) in said[0].getMessage()
    assert counters.opens_hit == 1 and counters.opens_missed == 2
    assert not any(r.levelno >= logging.WARNING and "without caching" in r.getMessage() for r in caplog.records)
