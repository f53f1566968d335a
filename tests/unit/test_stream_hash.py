"""The uncached stream's whole-file hash when blocks and the unread rest's chunks arrive
from two threads with different boundaries (a read during strict mode's check, or a
warm-up's stream read meanwhile): every byte is hashed once, in order, and the check
passes for right bytes and fails for wrong ones."""

from __future__ import annotations

import base64
import hashlib
import random
import threading

import pytest
import trio

from wandbfs.fill.errors import BadBytes
from wandbfs.fill.getter import FetchPolicy, FetchStats
from wandbfs.fill.stream import UncachedStream
from wandbfs.model.manifest import ManifestEntry

MiB = 1 << 20
DATA = random.Random(5).randbytes(2 * MiB + 5)
CHUNK = 100_000          # does not divide the 1 MiB block: chunk and block edges never meet


class _Storage:
    """Serves ``DATA`` in ``CHUNK`` pieces; the fetch of the unread rest (the one that asks
    for up to EOF from 0) waits until the test has read block 0 on its own."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.rest_asked = threading.Event()
        self.block_read = threading.Event()

    def __call__(self, workers: int, cancelled):  # the GetterFactory
        return self

    def fetch(self, start: int, end: int, sink) -> None:
        if (start, end) == (0, len(self.data)):
            self.rest_asked.set()
            assert self.block_read.wait(10), "block 0 was never read"
        for pos in range(start, end, CHUNK):
            sink(pos, self.data[pos:min(end, pos + CHUNK)])


def _entry(data: bytes) -> ManifestEntry:
    return ManifestEntry("other.bin", base64.b64encode(hashlib.md5(data).digest()).decode(), len(data))


async def _check_while_block_zero_is_read(storage: _Storage, entry: ManifestEntry) -> BaseException | None:
    stream = UncachedStream(entry, FetchPolicy(part_size=MiB), None, None, FetchStats(),
                            trio.CapacityLimiter(4), getter=storage)
    failed: list[BaseException] = []

    async def check() -> None:
        try:
            await stream.verify()
        except BadBytes as e:
            failed.append(e)
    async with trio.open_nursery() as n:
        n.start_soon(check)
        assert await trio.to_thread.run_sync(storage.rest_asked.wait, 10)   # the check waits in its fetch
        assert await stream.read(10, 100) == storage.data[10:110]   # block 0, hashed by this read
        storage.block_read.set()
    assert stream.verified == (not failed)
    return failed[0] if failed else None


@pytest.mark.timeout(30)
def test_a_block_hashed_under_the_check_is_counted_once():
    storage = _Storage(DATA)
    assert trio.run(_check_while_block_zero_is_read, storage, _entry(DATA)) is None


@pytest.mark.timeout(30)
def test_wrong_bytes_still_fail_the_check():
    bad = bytearray(DATA)
    bad[MiB + 7] ^= 1                               # past block 0: seen only by the check's chunks
    storage = _Storage(bytes(bad))
    assert isinstance(trio.run(_check_while_block_zero_is_read, storage, _entry(DATA)), BadBytes)
