"""The fetcher: the one place that decides how an object's bytes get to a reader.

A read that misses the cache lands here. In-process, concurrent readers of one object share
one ``FillItem`` (prefetch.py); across processes (a second mount, the SDK) a lock file per
object makes the second one wait and then find a cache hit. Objects are downloaded with our
own HTTP client (urllib3: pooled connections, explicit connect/read timeouts, no hidden
retries; the SDK's blob download retries a 500 for about 20 minutes), verified against the
manifest digest, and renamed into the object cache.

Two ways to serve: ``ensure()`` waits for the verified object (``--verify strict``);
``open_object()`` returns the fill in progress so reads are served as their ranges arrive
(the default, streaming). Before a download starts the evictor makes room for it; when it
cannot (or the disk fills up mid-download), the object is served by an ``UncachedStream``
instead, straight from storage, nothing written.

Reference entries (``add_reference``: file://, http(s)://, s3://) take the same path and
the same cache key as ``artifact.download()``; only where their parts come from differs:
refs.py checks the remote object against the manifest (size, ETag) and hands the fill
engine a source to read it from. A scheme it cannot read is ``Unsupported``.

A cache that refuses writes (a pre-filled cache bind-mounted read-only) still serves its
objects: a hit is looked up and checked before any lock file is made, and a miss is served
by an ``UncachedStream``, as when the disk is full. A mount's readers go through
``reader.ObjectReader``, which holds what this module hands out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import trio
import urllib3

from wandbfs.cache.partial import Partials
from wandbfs.cache.store import ObjectCache
from wandbfs.cache.eviction import CacheLimits, Evictor
from wandbfs.model.manifest import ManifestEntry
from wandbfs.fill.errors import BadBytes, FetchError, NoSpace
from wandbfs.fill.getter import FetchPolicy, FetchStats, GetterFactory, RangeGetter
from wandbfs.fill.item import FillItem
from wandbfs.fill.refs import RefResolver
from wandbfs.fill.stream import UncachedStream
from wandbfs.fill.tiered import TieredGetter
from wandbfs.sdk.client import VersionDetail
from wandbfs.shared.tier import SharedTier

log = logging.getLogger(__name__)

UrlSource = Callable[[VersionDetail, str, bool], Awaitable[str]]

__all__ = ["Fetcher", "FetchPolicy", "FetchStats", "FillItem", "UncachedStream", "close_if_idle"]


class _TierFill:
    """A fill's ``TieredGetter`` and its item (whose plan says whether the fill is whole)."""

    getter: TieredGetter | None = None
    item: FillItem | None = None

    def whole(self) -> bool:
        return self.item is not None and self.item.plan.whole


def close_if_idle(item: FillItem) -> None:
    """Close a finished fill's descriptor if no reader holds the item any more.

    ``FillItem`` closes it on the last ``release`` after ``done`` is set, or in its hasher
    when nobody holds it; ``done`` is set on the trio thread a moment after the hasher's
    check, so a reader that lets go in between leaves the descriptor (and its shared flock:
    the object can never be evicted) open until unmount. Called once ``done`` is set, this
    closes it (an acquire/release pair closes exactly when nobody else holds it)."""
    if item.acquire():
        item.release()


class Fetcher:
    def __init__(self, cache: ObjectCache, url_source: UrlSource, *, policy: FetchPolicy | None = None,
                 limiter: trio.CapacityLimiter | None = None, nursery: trio.Nursery | None = None,
                 evictor: Evictor | None = None, metrics: Any = None, tier: SharedTier | None = None) -> None:
        """``metrics``: the mount's ``daemon.metrics.Metrics``, when it serves them; ``tier``:
        the shared cache tier (``--shared-cache``) fills look in before W&B."""
        self.cache = cache
        self.evictor = evictor or Evictor(cache, CacheLimits())
        self.url_source = url_source
        self.policy = policy or FetchPolicy()
        self.limiter = limiter or trio.CapacityLimiter(16)
        # Warm-ups fetch on their own few threads: a reader's first bytes never queue behind them.
        self.background = trio.CapacityLimiter(4)
        self._waiting = 0                 # readers waiting for bytes now (warm-ups hold back meanwhile)
        self._idle = trio.Event()
        self._idle.set()
        self.stats = FetchStats()
        self.nursery = nursery
        self._fills: dict[Path, FillItem] = {}
        self._starting: dict[Path, trio.Event] = {}
        self._verified: set[Path] = set()
        self._streams: dict[Path, UncachedStream] = {}
        self._stopping = False          # cancel_all() was called: the mount is going away
        self._http = urllib3.PoolManager(num_pools=4, maxsize=32, retries=False)
        self.partials = Partials(cache)
        self.refs = RefResolver(self._http, self.policy, self.stats)
        self.metrics = metrics
        self.tier = tier
        # Publishing to the tier reads a whole object: a few at a time, off the readers' threads.
        self.publishers = trio.CapacityLimiter(2)

    # ---- public ----------------------------------------------------------------------
    async def open_object(self, detail: VersionDetail, entry: ManifestEntry, *,
                          background: bool = False) -> Path | FillItem | UncachedStream:
        """The verified cache path, the (shared) fill bringing the bytes in, or - when the
        cache has no room - a stream that serves them without caching.

        A reference wandbfs cannot read raises ``Unsupported`` unless it is already cached
        (by ``artifact.download()``, say); one that changed since it was logged, ``RefChanged``.
        A mount's reads take this through ``reader.ObjectReader``, which holds the result;
        ``background`` (warm-ups) starts a fill on the background threads."""
        key = self.cache.path_for(entry)
        while True:
            stream = self._streams.get(key)
            if stream is not None:
                return stream
            if self.is_verified(entry):
                return key
            item = self._fills.get(key)
            if item is not None and (item.done.is_set() or item.error is not None or item.parked):
                self._fills.pop(key, None)
                if item.error is None and item.path is not None:
                    self._verified.add(item.path)
                    return item.path
                item = None  # a failed fill is over (its threads may still be exiting): start afresh
            if item is not None:
                return item
            starting = self._starting.get(key)
            if starting is not None:
                await starting.wait()
                continue
            ev = self._starting[key] = trio.Event()
            try:
                if background:
                    return await self._start(detail, entry, key, self.background)
                with self.foreground():
                    return await self._start(detail, entry, key, self.limiter)
            finally:
                del self._starting[key]
                ev.set()

    async def ensure(self, detail: VersionDetail, entry: ManifestEntry) -> Path:
        """The verified cache path; a digest mismatch is fetched once more, then FetchError."""
        for attempt in range(self.policy.digest_attempts):
            got = await self.open_object(detail, entry)
            if isinstance(got, Path):
                return got
            if isinstance(got, UncachedStream):
                raise NoSpace(f"{entry.path}: the cache is read-only" if self.cache.read_only
                              else f"{entry.path}: no room in the cache for {entry.size} bytes")
            try:
                return await got.wait_done()
            except BadBytes:
                if attempt + 1 >= self.policy.digest_attempts:
                    raise
                log.warning("refetching %s after a digest mismatch", entry.path)
        raise AssertionError("unreachable")

    def uncached(self, detail: VersionDetail, entry: ManifestEntry) -> UncachedStream:
        """The shared no-cache stream of an object (readers count themselves in ``users``)."""
        if self.cache.read_only:
            return self._uncached(detail, entry, "the cache is read-only", quiet=True)
        return self._uncached(detail, entry, "no room in the cache")

    def _uncached(self, detail: VersionDetail, entry: ManifestEntry, why: str, quiet: bool = False) -> UncachedStream:
        """``quiet``: the reason was logged once for the mount (a read-only cache), not per file."""
        key = self.cache.path_for(entry)
        stream = self._streams.get(key)
        if stream is None:
            getter = self.refs.source(entry).getter if entry.ref is not None else None
            stream = self._streams[key] = UncachedStream(entry, self.policy, self._url_fn(detail, entry), self._http,
                                                         self.stats, self.limiter, getter)
            self.stats.uncached += 1
            log.log(logging.DEBUG if quiet else logging.WARNING, "serving %s without caching it (%s)", entry.path, why)
        return stream

    async def warm(self, detail: VersionDetail, entry: ManifestEntry) -> None:
        """Bring an object into the cache ahead of any reader (warm-ups); nothing stays held.
        An object with no room in the cache is left alone: it is streamed when read. Waits
        while a reader waits for bytes (its first read must not share the link with these)."""
        await trio.sleep(self.WARM_DELAY)   # the open that started the warm-up attaches first
        await self._idle.wait()
        got = await self.open_object(detail, entry, background=True)
        if isinstance(got, FillItem):
            got.go_whole()
            await got.done.wait()
        elif isinstance(got, UncachedStream):
            self.forget_stream(got)

    WARM_DELAY = 0.02

    async def not_cached(self, entries: list[ManifestEntry]) -> list[ManifestEntry]:
        """Those of ``entries`` not in the cache with our verified mark (the rest are noted as
        verified). One worker thread looks at them one after another: on a new mount after
        the page cache was dropped each look is a disk read, and a version's hundreds of
        small files checked at once would queue ahead of the reads a reader waits for."""
        def look() -> tuple[list[ManifestEntry], list[Path]]:
            missing, found = [], []
            for e in entries:
                hit, marked = self._lookup_marked(e)
                if hit is not None and marked:
                    found.append(hit)
                else:
                    missing.append(e)
            return missing, found
        missing, found = await trio.to_thread.run_sync(look, limiter=self.background)
        self._verified.update(found)
        return missing

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """A reader is waiting for bytes (an attach, or a read of a range not yet present)."""
        self._waiting += 1
        if self._waiting == 1:
            self._idle = trio.Event()
        try:
            yield
        finally:
            self._waiting -= 1
            if self._waiting == 0:
                self._idle.set()

    def open_cached(self, path: Path) -> int | None:
        """Open a cache object, held against eviction (a shared flock); ``None`` if it was
        evicted meanwhile. Reads are served one at a time on the loop thread: the kernel is
        asked to read the file ahead of them, so they find it in memory."""
        fd = self.cache.open_shared(path)
        if fd is not None:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return fd

    def is_verified(self, entry: ManifestEntry) -> bool:
        """The object is in the cache and this mount has checked its digest (no I/O but a stat)."""
        key = self.cache.path_for(entry)
        return key in self._verified and self.cache.lookup(entry) is not None

    def forget_verified(self, path: Path) -> None:
        """An object we had verified was evicted (by us, another mount or the SDK)."""
        self._verified.discard(path)

    def forget_stream(self, stream: UncachedStream) -> None:
        """Drop a stream nobody reads any more (its blocks go with it)."""
        key = self.cache.path_for(stream.entry)
        if stream.users <= 0 and self._streams.get(key) is stream:
            del self._streams[key]

    def close(self) -> None:
        self._http.clear()

    def tier_status(self) -> dict[str, Any]:
        """The shared tier's part of ``wandbfs status``: what came from it, what was published."""
        tier = self.tier
        if tier is None:
            return {"shared_cache": None}
        t = tier.stats
        return {"shared_cache": tier.url, "shared_cache_up": tier.available(),
                "bytes_from_shared": self.stats.bytes_from_shared, "bytes_to_shared": t.bytes_written,
                "shared_published": t.published, "shared_bad_objects": t.bad_objects, "shared_waits": t.waits,
                "shared_errors": t.errors}

    # ---- internals -------------------------------------------------------------------
    async def _start(self, detail: VersionDetail, entry: ManifestEntry, key: Path,
                     limiter: trio.CapacityLimiter) -> Path | FillItem | UncachedStream:
        lock = contextlib.ExitStack()
        # A hit needs no lock (objects appear by an atomic rename) and no write access. A
        # reader's open looks on the loop thread (a stat and an xattr of the local cache: no
        # thread hop); a warm-up's looks in a thread, so checking a version's small files
        # against a cold disk never holds up the reads being served.
        off_loop = limiter is self.background
        hit = await self._checked_hit(entry, limiter, off_loop=off_loop)
        if hit is not None:
            return hit
        if self._stopping:   # after cancel_all: no new download (its temp would be left behind)
            raise FetchError(f"{entry.path}: the mount is stopping")
        if self.cache.read_only:
            return self._uncached(detail, entry, "the cache is read-only", quiet=True)
        try:
            # Cross-process: wait (in a thread, bounded) for another mount holding this object.
            # A holder that is stopped or hung must not hang our readers: after
            # --read-timeout the file is streamed instead. Not on the workers' limiter, and
            # abandoned if the mount stops meanwhile.
            await trio.to_thread.run_sync(
                lock.enter_context, self.cache.object_lock(entry, timeout=self.policy.read_timeout),
                abandon_on_cancel=True)
        except TimeoutError as e:
            return self._uncached(detail, entry, f"{e}; streaming it meanwhile")
        except OSError as e:
            if not self.cache.note_unwritable(e):
                raise
            why = "the cache is read-only" if self.cache.read_only else f"its lock file is not writable ({e.strerror})"
            return self._uncached(detail, entry, why, quiet=self.cache.read_only)
        try:
            # Someone may have brought it in while we waited for the lock.
            hit = await self._checked_hit(entry, limiter, off_loop=off_loop)
            if hit is not None:
                lock.close()
                return hit
            policy, source = self.policy, None
            whole = not policy.adaptive or entry.size <= max(policy.part_size, 1 << 20)
            if entry.ref is not None:
                # Not cached: check the referenced object against the manifest before anything
                # is reserved or written (gone, changed, refused, or a scheme we cannot read).
                source = self.refs.source(entry)
                await trio.to_thread.run_sync(source.prepare, limiter=limiter)
                if not source.ranges:  # the server cannot send parts: one whole GET
                    policy = dataclasses.replace(policy, part_size=max(entry.size, 1), concurrency=1)
                    whole = True
            if not await trio.to_thread.run_sync(self.evictor.reserve, entry.size, limiter=limiter):
                lock.close()
                return self.uncached(detail, entry)
            getter: GetterFactory | None = source.getter if source is not None else None
            tiered = _TierFill()
            if getter is None and self.tier is not None:
                getter = await self._tier_getter(detail, entry, key, policy, tiered)
            try:
                item = tiered.item = FillItem(entry, self.cache, policy, self._url_fn(detail, entry), self._http,
                                              self.stats, getter, whole=whole, partials=self.partials)
            except OSError as e:
                self.evictor.settle(entry.size)
                if not self.cache.note_unwritable(e):  # no temp file in a read-only cache
                    raise
                lock.close()
                return self._uncached(detail, entry, "the cache is read-only", quiet=True)
            except BaseException:
                self.evictor.settle(entry.size)
                raise
        except BaseException:
            lock.close()
            raise
        self._fills[key] = item
        self._nursery().start_soon(self._run_fill, item, key, lock, limiter, tiered.getter)
        return item

    async def _tier_getter(self, detail: VersionDetail, entry: ManifestEntry, key: Path, policy: FetchPolicy,
                           made: _TierFill) -> GetterFactory | None:
        """The factory of a fill's ``TieredGetter`` (parts from the shared tier, then W&B),
        which ``made`` keeps with its item. ``None`` when the tier is down: plain W&B."""
        tier = self.tier
        assert tier is not None
        if not tier.available():
            return None
        rel = self._tier_key(key)
        sums = None
        with trio.move_on_after(self.policy.read_timeout):   # the store has its own timeouts too
            sums = await trio.to_thread.run_sync(tier.lookup, rel, entry.size, abandon_on_cancel=True)
        url_fn = self._url_fn(detail, entry)

        def factory(workers: int, cancelled: Callable[[], bool]) -> TieredGetter:
            inner = RangeGetter(entry, policy, url_fn, self._http, self.stats, workers, cancelled)
            made.getter = TieredGetter(tier, rel, entry, inner, sums, made.whole, cancelled, self.stats)
            return made.getter
        if sums is not None:
            tier.note(objects_read=1)
        return factory

    def _lookup_marked(self, entry: ManifestEntry) -> tuple[Path | None, bool]:
        """The cached object (or ``None``) and whether it carries our verified mark."""
        hit = self.cache.lookup(entry)
        return hit, hit is not None and self.cache.is_marked_verified(hit, entry)

    async def _checked_hit(self, entry: ManifestEntry, limiter: trio.CapacityLimiter | None = None, *,
                           off_loop: bool = False) -> Path | None:
        """The cached object if it is there and its bytes are right; a wrong one is removed.

        Written by the SDK or another mount: the SDK never verifies what it downloads, so an
        object without our verified mark is hashed once per mount before it is served.
        ``off_loop``: look in a worker thread (background work), not on the loop thread."""
        limiter = limiter or self.limiter
        if off_loop:
            hit, marked = await trio.to_thread.run_sync(self._lookup_marked, entry, limiter=limiter)
        else:
            hit, marked = self._lookup_marked(entry)
        if hit is None:
            return None
        if marked or await trio.to_thread.run_sync(self._verify_and_mark, hit, entry, limiter=limiter):
            self._verified.add(hit)
            return hit
        # Removed without the object lock: at worst a copy another mount just renamed in goes
        # too and is fetched again (never a wrong byte: whatever is served has been hashed).
        log.warning("cached object for %s fails its digest; fetching again", entry.path)
        try:
            os.unlink(hit)
        except FileNotFoundError:
            pass
        except OSError as e:
            if not self.cache.note_unwritable(e):  # a read-only cache keeps it; we stream instead
                raise
        return None

    def _url_fn(self, detail: VersionDetail, entry: ManifestEntry) -> Callable[[bool], str]:
        """The blocking signed-URL source a fill's or stream's worker threads call."""
        token = trio.lowlevel.current_trio_token()

        def url_fn(refresh: bool) -> str:
            return trio.from_thread.run(self.url_source, detail, entry.path, refresh, trio_token=token)
        return url_fn

    def cancel_all(self) -> int:
        """Stop every download in flight, at once, temp files removed (SIGTERM, unmount).
        Returns how many were stopped."""
        self._stopping = True
        items = [item for item in self._fills.values() if not item.done.is_set()]
        for item in items:
            item.cancel()
        for stream in self._streams.values():
            stream.cancel()
        return len(items) + len(self._streams)

    def _nursery(self) -> trio.Nursery:
        if self.nursery is None:
            raise RuntimeError("Fetcher.nursery must be set before objects are fetched")
        return self.nursery

    async def _run_fill(self, item: FillItem, key: Path, lock: contextlib.ExitStack,
                        limiter: trio.CapacityLimiter, tiered: TieredGetter | None = None) -> None:
        self.stats.in_flight += 1

        async def thread(fn: Callable[[], None]) -> None:
            await self._thread(fn, limiter)
        try:
            await item.drive(thread)
        finally:
            self.stats.in_flight -= 1
            if self.metrics is not None and item.first_byte_s is not None:
                self.metrics.ttfb.observe(item.first_byte_s)
            self.evictor.settle(item.size)
            lock.close()
            close_if_idle(item)
            if self._fills.get(key) is item:
                self._fills.pop(key, None)
            if item.error is None and item.path is not None:
                self._verified.add(item.path)
            if tiered is not None:
                self._nursery().start_soon(self._tier_finish, tiered, item)

    def _tier_key(self, path: Path) -> str:
        """An object's key in the shared tier: its path under the cache's ``artifacts/``
        (``obj/md5/ab/cdef``), so every host names it alike."""
        return path.relative_to(self.cache.artifacts_dir).as_posix()

    async def _tier_finish(self, tiered: TieredGetter, item: FillItem) -> None:
        """Publish what this fill verified (if its lease says so) and give the lease up."""
        ok = item.error is None and item.path is not None
        await trio.to_thread.run_sync(tiered.finish, item.path if ok else None, isinstance(item.error, BadBytes),
                                      limiter=self.publishers, abandon_on_cancel=True)

    async def share(self, detail: VersionDetail, entry: ManifestEntry) -> bool:
        """Make sure the shared tier has this object (``wandbfs prefetch --shared``): fetched
        into the local cache (from the tier or W&B) and published if the tier lacks it.
        ``False`` when there is no tier, it is down, or it had the object already."""
        path = await self.ensure(detail, entry)
        tier = self.tier
        if tier is None or entry.ref is not None:
            return False
        rel = self._tier_key(path)

        def publish() -> bool:
            if tier.lookup(rel, entry.size) is not None:
                return False
            return tier.publish(rel, path, entry.size, {})
        return await trio.to_thread.run_sync(publish, limiter=self.publishers, abandon_on_cancel=True)

    def _verify_and_mark(self, path: Path, entry: ManifestEntry) -> bool:
        ok = self.cache.verify_file(path, entry)
        if ok:
            self.cache.mark_verified(path, entry)
        return ok

    async def _thread(self, fn: Callable[[], None], limiter: trio.CapacityLimiter | None = None) -> None:
        # The hasher waits on workers, so it must not take a limiter slot they need.
        limiter = None if fn.__name__ == "run_hasher" else (limiter or self.limiter)
        # Fills are cancelled only when the mount stops (cancel_all first): a worker stuck
        # in a stalled read is then abandoned, never waited for.
        await trio.to_thread.run_sync(fn, limiter=limiter, abandon_on_cancel=True)
