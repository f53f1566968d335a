"""One open file's reader: the single owner of what an open holds on its object.

``open`` gets an ``ObjectReader``; ``read`` and ``release`` only call ``read()`` and
``close()``. Behind them the object is one of three sources, and the reader alone decides
which, switches between them and counts its references:

* the verified cache file: a descriptor with a shared flock (eviction leaves it alone);
* the fill in progress (``FillItem``): one reference for the reader while it is attached,
  one more per read in flight, so the fill's descriptor stays open until nobody reads;
  once the fill is verified the reader moves to the cache file (promotion);
* the uncached stream (no room in the cache, a read-only cache, or the disk filling up
  under the download): counted in ``stream.users``.

``close()`` is idempotent and final: whatever is still attaching or reading when it
comes lets go at once, and a descriptor opened after it is closed at once, so after the
last close nothing of the object stays held (rclone's ``Item.ReadAt`` and mountpoint-s3's
``PrefetchGetObject.read`` are the models).

Two rules about unverified bytes live here too: strict mode attaches only verified
objects, and a file no larger than one part (``--part-size``: one request anyway) is
served only after its digest matched, so small files (headers, configs, tokenizers) are
never served unverified.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import trio

from wandbfs.fill.errors import FetchError, NoSpace
from wandbfs.fill.fetcher import Fetcher, FillItem, UncachedStream
from wandbfs.model.manifest import ManifestEntry
from wandbfs.fill.getter import CHUNK
from wandbfs.sdk.client import AuthError, BackendError, NotFound, VersionDetail

log = logging.getLogger(__name__)

__all__ = ["ObjectReader", "ReadCounters"]

STICKY = (NotFound, AuthError, BackendError)
"""Failures a reader keeps answering with: the kernel retries a failed page read at once,
and that must not refetch (a new open tries again)."""


@dataclass
class ReadCounters:
    """What a mount's readers did, for ``wandbfs status`` and the metrics."""

    opens_hit: int = 0           # readers whose object was in the cache
    opens_missed: int = 0        # ... that had to be downloaded (or streamed)
    bytes_from_cache: int = 0    # served from a cache file
    bytes_from_wandb: int = 0    # served from a download in progress or the uncached stream


class _Attempt:
    """One attach in flight, and how it ended."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class ObjectReader:
    """The bytes of one object for one open file; see the module doc."""

    ATTACH_TRIES = 3

    def __init__(self, fetcher: Fetcher, detail: VersionDetail, entry: ManifestEntry, *, strict: bool = False,
                 counters: ReadCounters | None = None, latency: Callable[[float], None] | None = None) -> None:
        """``latency`` observes the seconds of each read not served from the cache file."""
        self.fetcher = fetcher
        self.detail = detail
        self.entry = entry
        self.strict = strict
        self.counters = counters or ReadCounters()
        self.latency = latency
        self.whole = entry.size <= max(CHUNK, fetcher.policy.part_size)   # one part: verified first
        self.failed: BaseException | None = None   # the sticky failure, once a read failed
        self.tail_unverified = False                # a read of the file's end was served unverified
        self.closed = False
        self.hit = False                            # the object was in the cache when attached
        self.last_read = trio.current_time()        # when a read was last served (from the open on)
        self._fd = -1
        self._item: FillItem | None = None          # holds one reference while set
        self._stream: UncachedStream | None = None  # counted in its users while set
        self._attaching: _Attempt | None = None

    @property
    def source(self) -> str | None:
        """``"cache"``, ``"fill"``, ``"stream"``, or ``None`` (not attached, or closed)."""
        if self._fd >= 0:
            return "cache"
        if self._item is not None:
            return "fill"
        return "stream" if self._stream is not None else None

    # ---- the reader's API ------------------------------------------------------------
    async def start(self) -> None:
        """Attach now, in the background of ``open``: a cached object is held against
        eviction while the file is open (reads may all come from the page cache), and a
        missing one gets its fill (whole for a file of one part; adaptive, fetching what is
        read, for larger ones). Never raises: the read that needs the bytes reports the
        failure."""
        try:
            await self._attach()
        except Exception as e:  # noqa: BLE001 - reported by the read that needs the bytes
            log.info("background fill of %s not started: %s", self.entry.path, e)

    async def read(self, off: int, size: int) -> bytes:
        """``size`` bytes at ``off`` (fewer at EOF); a failure is raised, and raised again by
        every later read. Which reads wait for the whole file's digest: a read that reaches
        EOF with every byte before it present (the end of a whole read), and any read once
        every byte is present; so a reader that reads every byte of a file, in any order,
        has its last read verified. A read of the end on its own (a parquet footer, a zip's
        directory) is served as it arrives, like any partial read, and ``tail_unverified``
        tells the FUSE layer to drop the file's pages from the kernel cache."""
        if self.failed is not None:
            raise self.failed.with_traceback(None)
        self.last_read = trio.current_time()
        if self._fd >= 0:
            data = os.pread(self._fd, size, off)
            self.counters.bytes_from_cache += len(data)
            return data
        t0 = time.monotonic()
        try:
            data = await self._read_fetching(off, size)
        except STICKY as e:
            self.failed = e
            raise
        if self.hit:
            self.counters.bytes_from_cache += len(data)
        else:
            self.counters.bytes_from_wandb += len(data)
        if self.latency is not None:
            self.latency(time.monotonic() - t0)
        return data

    async def settled(self) -> None:
        """Return once the reader has its source, or its attach failed (never raises)."""
        try:
            await self._attach()
        except Exception:  # noqa: BLE001 - the read that needs the bytes reports it
            pass

    def close(self) -> None:
        """Let go of everything (idempotent). Reads or an attach still in flight drop what
        they get back instead of keeping it."""
        if self.closed:
            return
        self.closed = True
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        self._drop_item()
        self._drop_stream()

    # ---- attaching -------------------------------------------------------------------
    def _attached(self) -> bool:
        return self._fd >= 0 or self._item is not None or self._stream is not None

    async def _attach(self) -> None:
        """Give the reader its source, once: a caller that finds an attach in flight waits
        for it and shares its outcome, failure included (a second try of its own would fetch
        the object again for nothing); a caller that comes later tries afresh."""
        if self._attaching is not None:
            attempt = self._attaching
            await attempt.done.wait()
            if attempt.error is not None:
                raise attempt.error.with_traceback(None)
            return
        if self._attached() or self.closed:
            return
        attempt = self._attaching = _Attempt()
        try:
            await self._attach_once()
        except BaseException as e:
            attempt.error = e
            raise
        finally:
            self._attaching = None
            attempt.done.set()

    async def _attach_once(self) -> None:
        f = self.fetcher
        for _ in range(self.ATTACH_TRIES):
            try:
                got = await (f.ensure(self.detail, self.entry) if self.strict
                             else f.open_object(self.detail, self.entry))
            except NoSpace:
                got = f.uncached(self.detail, self.entry)
            if self.closed:
                if isinstance(got, UncachedStream):
                    f.forget_stream(got)
                return
            if not isinstance(got, (FillItem, UncachedStream)):   # the verified cache path
                fd = f.open_cached(got)
                if fd is None:
                    f.forget_verified(got)  # evicted between lookup and open: again
                    continue
                self._take_fd(fd)
                self.hit = True
                self.counters.opens_hit += 1
                return
            self.counters.opens_missed += 1
            if isinstance(got, FillItem):
                if self._take_item(got) or self.closed:
                    return
                continue   # parked (let go by its last reader) a moment ago: open it again
            if self.strict:   # attached once verified: a read meanwhile waits for this attach
                await self._verify_stream(got)
            self._take_stream(got)
            return
        raise FetchError(f"{self.entry.path}: the object keeps disappearing from the cache")

    # ---- holding and letting go (the only places that count references) ---------------
    def _take_fd(self, fd: int) -> None:
        if self.closed:
            os.close(fd)
        else:
            self._fd = fd

    def _take_item(self, item: FillItem) -> bool:
        if not self.closed and item.acquire():
            self._item = item
            return True
        return False

    def _drop_item(self) -> None:
        item, self._item = self._item, None
        if item is not None:
            item.release()

    def _take_stream(self, stream: UncachedStream) -> None:
        if self.closed:
            self.fetcher.forget_stream(stream)
            return
        stream.users += 1
        self._stream = stream

    async def _verify_stream(self, stream: UncachedStream) -> None:
        """Strict mode's whole-file check of a stream before it is attached; counted in its
        users meanwhile, so a warm-up or another reader letting go does not forget it."""
        stream.users += 1
        try:
            await stream.verify()
        finally:
            stream.users -= 1

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.users -= 1
            self.fetcher.forget_stream(stream)

    def _promote(self, item: FillItem) -> None:
        """The fill is verified in the cache: read the cache file from now on."""
        if self._item is not item or item.path is None or self.closed:
            return
        fd = self.fetcher.open_cached(item.path)
        if fd is not None:
            self._take_fd(fd)
            self._drop_item()

    # ---- reading ---------------------------------------------------------------------
    def _closed_error(self) -> FetchError:
        return FetchError(f"{self.entry.path}: the file was closed during the read")

    async def _read_fetching(self, off: int, size: int) -> bytes:
        if not self._attached():
            await self._attach()
        if self._fd >= 0:
            return os.pread(self._fd, size, off)
        if self._stream is not None:
            return await self._read_stream(self._stream, off, size)
        item = self._item
        if item is None:
            raise self._closed_error()
        if not item.acquire():  # this request's reference: the fill's fd stays open until we have read
            raise self._closed_error()
        try:
            end = min(off + size, self.entry.size)
            try:
                if self.whole or (end >= self.entry.size and item.has(0, off)):
                    await item.wait_done()   # the read that ends a whole read answers for the digest
                else:
                    if item.has(off, end):
                        await item.wait_range(off, end)   # steers the read-ahead; returns at once
                    else:
                        with self.fetcher.foreground():
                            await item.wait_range(off, end)
                    if item.has(0, self.entry.size):
                        await item.wait_done()   # every byte is there: no read goes unverified now
                    elif end >= self.entry.size:
                        self.tail_unverified = True   # a probe of the end (a parquet footer)
            except NoSpace:
                return await self._read_stream(self._switch_to_stream(item), off, size)
            data = item.pread(end - off, off) if end > off else b""
            self._promote(item)
            return data
        finally:
            item.release()

    def _switch_to_stream(self, item: FillItem) -> UncachedStream:
        """The disk filled up under this download: serve the file without caching."""
        if self._item is item:
            log.warning("%s: the cache's disk filled up during the download; reading on uncached",
                        self.entry.path)
            self._drop_item()
            self._take_stream(self.fetcher.uncached(self.detail, self.entry))
        if self._stream is None:
            raise self._closed_error()
        return self._stream

    async def _read_stream(self, stream: UncachedStream, off: int, size: int) -> bytes:
        if not self.whole:
            return await stream.read(off, size)
        data = await stream.read(0, self.entry.size)   # the whole file, verified, then the slice
        return data[off:off + size]
