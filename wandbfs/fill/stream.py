"""Serving a file without caching it: for when the cache's disk has no room.

When a download cannot fit (the size cap or the free-space floor, even after evicting
everything not in use or pinned) or the disk fills up mid-download, failing the read would
stop a training job over a cache. Instead the object is read straight from storage in
blocks, a few of which are kept in memory, and nothing is written to disk.

The no-wrong-bytes rule still holds: blocks are hashed in order as they arrive, and the
read that reaches the end of the file waits for the whole-file digest. If the reads
skipped ahead, the part not yet hashed is streamed once more through the hash (no
storage) before that read is answered. A mismatch is EIO, and the stream starts over.
"""

from __future__ import annotations

import collections
import logging
import threading

import trio
import urllib3

from wandbfs.cache.store import Hasher
from wandbfs.model.manifest import ManifestEntry
from wandbfs.fill.errors import BadBytes, FetchError
from wandbfs.fill.errors import mismatch_message
from wandbfs.fill.getter import FetchPolicy, FetchStats, Getter, GetterFactory, RangeGetter, UrlFn

log = logging.getLogger(__name__)

__all__ = ["UncachedStream"]


class UncachedStream:
    """One object read from storage block by block, shared by the handles that have it open."""

    BLOCKS_KEPT = 4

    def __init__(self, entry: ManifestEntry, policy: FetchPolicy, url_fn: UrlFn, http: urllib3.PoolManager,
                 stats: FetchStats, limiter: trio.CapacityLimiter, getter: GetterFactory | None = None) -> None:
        self.entry = entry
        self.size = entry.size
        self.block = max(1 << 20, policy.part_size)
        self._cancelled = False
        self.getter: Getter = (getter(1, self._is_cancelled) if getter is not None else
                               RangeGetter(entry, policy, url_fn, http, stats, cancelled=self._is_cancelled))
        self.limiter = limiter
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._loading: dict[int, trio.Event] = {}
        self._errors: dict[int, BaseException] = {}
        self._lock = threading.Lock()       # the hasher: advanced from worker threads
        self._hasher = Hasher.for_entry(entry)
        self._hashed = 0
        self._verifying = trio.Lock()      # one whole-file check at a time; the others wait for it
        self.verified = False
        self.users = 0

    def cancel(self) -> None:
        """Stop (the mount is stopping): transfers end at their next chunk, reads get EIO."""
        self._cancelled = True

    def _is_cancelled(self) -> bool:
        return self._cancelled

    def _check(self) -> None:
        if self._cancelled:
            raise FetchError(f"{self.entry.path}: stopped (the mount is stopping)")

    async def read(self, off: int, size: int) -> bytes:
        end = min(off + size, self.size)
        if end <= off:
            return b""
        out = bytearray()
        for b in range(off // self.block, (end - 1) // self.block + 1):
            data = await self._get_block(b)
            lo = max(off, b * self.block) - b * self.block
            hi = min(end, (b + 1) * self.block) - b * self.block
            out += data[lo:hi]
        if end >= self.size:
            await self.verify()  # the read that reaches EOF answers for the whole file
        return bytes(out)

    async def verify(self) -> None:
        """Finish the whole-file hash (streaming what was skipped); FetchError on a mismatch."""
        async with self._verifying:
            if self.verified:
                return
            await trio.to_thread.run_sync(self._hash_rest, limiter=self.limiter, abandon_on_cancel=False)
            with self._lock:
                ok = self._hashed == self.size and self._hasher.matches(self.entry)
                if not ok:
                    self._hasher, self._hashed = Hasher.for_entry(self.entry), 0
                    self._blocks.clear()
                self.verified = ok
        if not ok:
            log.error("digest mismatch for %s (served without caching)", self.entry.ref or self.entry.path)
            raise BadBytes(mismatch_message(self.entry))

    # ---- internals -------------------------------------------------------------------
    async def _get_block(self, b: int) -> bytes:
        while True:
            data = self._blocks.get(b)
            if data is not None:
                self._blocks.move_to_end(b)
                return data
            ev = self._loading.get(b)
            if ev is None:
                break
            await ev.wait()
            err = self._errors.pop(b, None)
            if err is not None:
                raise err
        ev = self._loading[b] = trio.Event()
        try:
            data = await trio.to_thread.run_sync(self._fetch_block, b, limiter=self.limiter,
                                                 abandon_on_cancel=False)
            self._blocks[b] = data
            while len(self._blocks) > self.BLOCKS_KEPT:
                self._blocks.popitem(last=False)
            return data
        except BaseException as e:
            self._errors[b] = e
            raise
        finally:
            del self._loading[b]
            ev.set()

    def _fetch_block(self, b: int) -> bytes:
        start = b * self.block
        end = min(self.size, start + self.block)
        buf = bytearray(end - start)

        def sink(pos: int, chunk: bytes) -> None:
            self._check()
            buf[pos - start: pos - start + len(chunk)] = chunk
        self.getter.fetch(start, end, sink)
        self._check()   # a cancelled getter returns early: never hand out a partial block
        data = bytes(buf)
        with self._lock:
            if self._advance(start, data):  # in order: hash it now, so a sequential read costs no second pass
                self._hash_kept_blocks()
        return data

    def _advance(self, pos: int, data: bytes) -> bool:
        """Hash the part of ``data`` (the bytes at ``pos``) that follows what is hashed so far
        (caller holds ``_lock``). Blocks and the unread rest's chunks arrive from different
        threads with different boundaries, so a piece may start before the hashed point and
        end past it: only its new bytes count, once. False if it lies wholly before or after."""
        skip = self._hashed - pos
        if skip < 0 or skip >= len(data):
            return False
        self._hasher.update(memoryview(data)[skip:] if skip else data)
        self._hashed = pos + len(data)
        return True

    def _hash_kept_blocks(self) -> None:
        """Blocks that arrived early can be hashed once the bytes before them have been."""
        while self._hashed < self.size:
            b = self._hashed // self.block
            nxt = self._blocks.get(b)
            if nxt is None or not self._advance(b * self.block, nxt):
                return

    def _hash_rest(self) -> None:
        with self._lock:
            self._hash_kept_blocks()
            start = self._hashed
        if start >= self.size:
            return
        log.info("hashing the unread %d bytes of %s (served without caching)", self.size - start, self.entry.path)

        def sink(pos: int, chunk: bytes) -> None:
            self._check()
            with self._lock:
                self._advance(pos, chunk)
        self.getter.fetch(start, self.size, sink)
        self._check()
