"""A first open's warm-up of its version's small files, without a mount: the real fetcher,
cache and warm-ups against the loopback blob server of ``test_reader``.

What must hold: on a new mount (a new fetcher over a cache already holding the version)
the warm-up looks its files up in a worker thread, never on the loop thread that serves
reads (after a page-cache drop each look is a disk read: hundreds of them on the loop made
the first read of a cached 512 MiB file 3x slower, bench R1), asks storage for nothing it
has, fetches what is missing, and leaves the opened file to its own reader."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import trio

from tests.unit.test_reader import MiB, Blobs, entry_of, run
from wandbfs.cache.store import ObjectCache
from wandbfs.fill.fetcher import Fetcher
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

    def lookup(self, entry: ManifestEntry) -> Path | None:
        self.looked.append((entry.path, threading.current_thread().name))
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


def test_a_remounts_warm_up_looks_in_a_thread_and_fetches_only_what_is_missing(blobs, tmp_path):
    files = {f"conf/{i:02d}.json": bytes([i]) * (1000 + i) for i in range(20)}
    files["model.bin"] = b"m" * (2 * MiB)
    blobs.files.update(files)
    detail = version_of(files)
    entries = detail.manifest.entries
    opened = entries["model.bin"]
    cached = [p for p in files if p.startswith("conf/") and int(p[5:7]) % 2 == 0]

    async def first_mount(fetcher: Fetcher, cache: WatchedCache) -> None:
        for p in cached:
            await fetcher.ensure(detail, entries[p])
    mount_run(blobs, tmp_path, first_mount)
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
