"""A first open's warm-up of its version's small files, without a mount: the real fetcher,
cache and warm-ups against the loopback blob server of ``test_reader``.

What must hold: on a new mount (a new fetcher over a cache already holding the version)
the warm-up looks its files up in a worker thread, never on the loop thread that serves
reads (after a page-cache drop each look is a disk read: hundreds of them on the loop made
the first read of a cached 512 MiB file 3x slower, bench R1), asks storage for nothing it
has, fetches what is missing, and leaves the opened file to its own reader."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import trio

from tests.unit.test_reader import MiB, Blobs, entry_of, run
from wandbfs.cache.store import ObjectCache
from wandbfs.fill.fetcher import Fetcher
from wandbfs.fill.reader import ObjectReader
from wandbfs.fuse.warmups import Warmups
from wandbfs.model.manifest import ManifestEntry, parse_manifest
from wandbfs.sdk.client import VersionDetail


@pytest.fixture
def blobs() -> Iterator[Blobs]:
    b = Blobs()
    yield b
    b.close()


class WatchedCache(ObjectCache):
    """The cache, noting which thread looked up which object."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.looked: list[tuple[str, str]] = []
        self.looked_at: list[tuple[str, float]] = []   # time.monotonic() of each look-up

    def lookup(self, entry: ManifestEntry) -> Path | None:
        self.looked.append((entry.path, threading.current_thread().name))
        self.looked_at.append((entry.path, time.monotonic()))
        return super().lookup(entry)


def version_of(files: dict[str, bytes]) -> VersionDetail:
    entries = {p: {"digest": entry_of(d, p).digest, "size": len(d)} for p, d in files.items()}
    manifest = parse_manifest({"version": 1, "contents": entries})
    return VersionDetail("acme", "model", "m", 0, "art-1", "acme", "wandb-registry-model", 0.0, (), manifest, {})


def mount_run(blobs: Blobs, root: Path, body: Any) -> Any:
    """``body(fetcher, cache)`` in a trio run with a fresh fetcher and cache: one mount's life."""
    cache = WatchedCache(root)
    result, _counters = run(blobs, cache, lambda fetcher, _reader: body(fetcher, cache))
    return result


def cached_version(blobs: Blobs, root: Path, n: int, cached: Any) -> VersionDetail:
    """A version of ``n`` small files under ``conf/`` and a 2 MiB ``model.bin`` on the blob
    server, the files ``cached(path)`` says put in the cache by a first mount."""
    files = {f"conf/{i:02d}.json": bytes([i]) * (1000 + i) for i in range(n)}
    files["model.bin"] = b"m" * (2 * MiB)
    blobs.files.update(files)
    detail = version_of(files)

    async def first_mount(fetcher: Fetcher, cache: WatchedCache) -> None:
        for p, e in detail.manifest.entries.items():
            if cached(p):
                await fetcher.ensure(detail, e)
    mount_run(blobs, root, first_mount)
    return detail


def test_a_remounts_warm_up_looks_in_a_thread_and_fetches_only_what_is_missing(blobs, tmp_path):
    def even(p: str) -> bool:
        return p.startswith("conf/") and int(p[5:7]) % 2 == 0
    detail = cached_version(blobs, tmp_path, 20, even)
    entries = detail.manifest.entries
    opened = entries["model.bin"]
    files = list(entries)
    cached = [p for p in files if even(p)]
    gets_before = blobs.gets

    async def new_mount(fetcher: Fetcher, cache: WatchedCache) -> tuple[list[tuple[str, str]], str]:
        loop_thread = threading.current_thread().name
        warm = Warmups(None, fetcher, nursery=None)  # type: ignore[arg-type] - no catalog needed
        with trio.fail_after(30):
            await warm._small_files(detail, opened)
        return cache.looked, loop_thread

    looked, loop_thread = mount_run(blobs, tmp_path, new_mount)
    small = {p for p in files if p != "model.bin"}
    on_loop = [p for p, thread in looked if thread == loop_thread and p in cached]
    assert not on_loop, f"cached objects looked up on the loop thread: {on_loop}"
    assert "model.bin" not in {p for p, _ in looked}, "the warm-up looked at the opened file"
    assert blobs.gets - gets_before == len(small) - len(cached), "storage asked for more than the missing files"

    async def check(fetcher: Fetcher, cache: WatchedCache) -> list[str]:
        return [p for p in small if cache.lookup(entries[p]) is None]
    assert mount_run(blobs, tmp_path, check) == []


def test_a_cached_file_being_read_holds_its_versions_look_ups_back_until_it_pauses(blobs, tmp_path):
    """The opened file is in the cache and read on: the warm-up looks nothing up until the
    reads pause for QUIET_S (the file still open), and then it does its work."""
    detail = cached_version(blobs, tmp_path, 10, lambda p: True)
    opened = detail.manifest.entries["model.bin"]

    async def new_mount(fetcher: Fetcher, cache: WatchedCache) -> tuple[float, float]:
        reader = ObjectReader(fetcher, detail, opened)
        async with trio.open_nursery() as n:
            n.start_soon(reader.start)
            warm = Warmups(None, fetcher, nursery=n)  # type: ignore[arg-type] - no catalog needed
            warm.QUIET_S = 1.0   # reads below come every 10 ms: a wide margin on a loaded machine
            warm.file_opened(detail, opened, reader)
            with trio.fail_after(30):
                t_end = time.monotonic() + 1.5
                off = 0
                while time.monotonic() < t_end:   # 1.5 s of reads, as a large file's reader does
                    off = (off + (64 << 10)) % opened.size
                    assert len(await reader.read(off, 64 << 10)) > 0
                    await trio.sleep(0.01)
                stopped = time.monotonic()
                while not any(p != "model.bin" for p, _ in cache.looked_at):   # the file stays open
                    await trio.sleep(0.01)
                first_look = min(t for p, t in cache.looked_at if p != "model.bin")
                assert reader.source == "cache" and not reader.closed
            reader.close()
        return stopped, first_look

    stopped, first_look = mount_run(blobs, tmp_path, new_mount)
    assert first_look >= stopped, f"looked up {stopped - first_look:.2f} s before the reads paused"
