"""Warm-ups: what a listing, a lookup or a first open says is likely next, fetched ahead.

Listing a collection loads its versions' manifests (the next ``ls vN`` answers from
memory); looking up a file gets its signed URL (an open is likely; for a large version the
catalog asks for it and its folder's next files, see ``catalog/urls.py``; on a fresh mount
it is asked for beside the version's manifest, ``early_url``); the first open
in a version fetches its small files (``cat *``, config + tokenizer). Each runs once per
collection or version, in the background, and never lets a failure reach a reader. Not the
``wandbfs prefetch`` command, which fills the cache without a mount.

Bounded, whatever the version's size: at most ``PARALLEL`` warm-up fetches are in flight
(all warm-ups together, one task each), items are produced as the work goes rather than
all at once, a first open warms at most ``SMALL_FILES`` files (all of a version's small
files when there are no more than that, else the ones after the opened file in its
folder), and lookups queue their URL warm-ups in a channel of ``URL_QUEUE`` (more are
dropped: a warm-up is only ever a head start).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Awaitable, Callable, Iterable, Iterator

import trio

from wandbfs.catalog.catalog import Catalog
from wandbfs.fill.fetcher import Fetcher
from wandbfs.fill.reader import ObjectReader
from wandbfs.model.manifest import ManifestEntry
from wandbfs.sdk.client import VersionDetail

log = logging.getLogger(__name__)

__all__ = ["Warmups"]


class Warmups:
    """The mount's warm-ups; off with ``--no-warm``, idle until it has a nursery."""

    VERSIONS = 2000          # manifests loaded ahead when a collection is listed
    MANIFEST_FILES = 100_000  # ... until they hold this many files (a manifest stays in memory)
    SMALL_FILE = 4 << 20     # files up to this size are fetched when their version is first opened
    SMALL_FILES = 1000       # ... at most this many per version
    VERSION_BYTES = 256 << 20
    PARALLEL = 8             # warm-up fetches in flight, all warm-ups together
    QUIET_S = 0.25           # a first open read from the cache: its small files wait for a pause this long
    HOLD_S = 10.0            # ... or this long at most
    URL_QUEUE = 64           # looked-up files waiting for their URL warm-up

    def __init__(self, catalog: Catalog, fetcher: Fetcher, *, enabled: bool = True,
                 nursery: trio.Nursery | None = None) -> None:
        self.catalog = catalog
        self.fetcher = fetcher
        self.enabled = enabled
        self.nursery = nursery
        self._started: set[tuple[Any, ...]] = set()   # versions/collections whose warm-up has started
        self._slots = trio.Semaphore(self.PARALLEL)
        self._url_in, self._url_out = trio.open_memory_channel[tuple[VersionDetail, ManifestEntry]](self.URL_QUEUE)
        self._url_worker = False

    # ---- what the handlers say happened ---------------------------------------------
    def collection_listed(self, org: str, reg: str, coll: str, versions: Iterable[int]) -> None:
        key = ("coll", org, reg, coll)
        if key not in self._started:   # don't sort a big listing on every readdir
            self._start(key, self._manifests, org, reg, coll, sorted(versions))

    def file_looked_up(self, detail: VersionDetail, entry: ManifestEntry | None = None) -> None:
        """An open is likely: get the file's URL, unless the file is in the cache already
        (its open needs no URL, and a remount reading cached versions asks W&B nothing)."""
        if not self.enabled or self.nursery is None or entry is None or entry.ref is not None:
            return
        if self.catalog.urls.known(detail, entry.path) or self.fetcher.cache.lookup(entry) is not None:
            return
        if not self._url_worker:
            self._url_worker = True
            self.nursery.start_soon(self._url_warmer)
        try:
            self._url_in.send_nowait((detail, entry))
        except trio.WouldBlock:
            pass   # enough queued already: this one is fetched when it is opened

    def early_url(self, org: str, reg: str, coll: str, idx: int, name: str) -> None:
        """``name`` is looked up at the top of a version whose manifest is being fetched
        from W&B (a ``stat``/``open`` of a full path on a fresh mount): its URL is asked for
        by name now, beside the manifest, so the open likely next does not wait for one more
        round trip. One small request, wasted if the name is a folder."""
        if self.enabled and self.nursery is not None:
            self.catalog.urls.early(org, reg, coll, idx, name, self.nursery)

    def file_opened(self, detail: VersionDetail, entry: ManifestEntry | None = None,
                    reader: ObjectReader | None = None) -> None:
        """``entry``: the file opened (in a version with many small files, its folder's next
        files are the ones warmed); ``reader``: its reader (see ``_quiet``)."""
        self._start(("files", detail.artifact_id, detail.index), self._small_files, detail, entry, reader)

    # ---- running them ----------------------------------------------------------------
    def _start(self, key: tuple[Any, ...], fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self.nursery is None or key in self._started or not self.enabled:
            return
        self._started.add(key)
        self.nursery.start_soon(self._quietly, fn, *args)

    async def _quietly(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await fn(*args)
        except Exception as e:  # noqa: BLE001 - warm-ups are best effort
            log.debug("warm-up %s%r: %s", getattr(fn, "__name__", fn), args[:4], e)

    async def _each(self, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]],
                    enough: Callable[[], bool] = lambda: False) -> None:
        """``fn`` on every item, ``PARALLEL`` at most in flight across all warm-ups; items are
        taken from ``items`` only as slots free up (nothing is queued per item), until
        ``enough()``."""
        async with trio.open_nursery() as n:
            for item in items:
                await self._slots.acquire()
                if enough():
                    self._slots.release()
                    return
                n.start_soon(self._in_slot, fn, item)

    async def _in_slot(self, fn: Callable[[Any], Awaitable[Any]], item: Any) -> None:
        try:
            await self._quietly(fn, item)
        finally:
            self._slots.release()

    async def _manifests(self, org: str, reg: str, coll: str, indices: list[int]) -> None:
        """The newest versions' manifests, until they hold ``MANIFEST_FILES`` files: a
        collection of huge versions warms one or a few, not all of them into memory."""
        files = 0

        async def one(idx: int) -> None:
            nonlocal files
            files += len((await self.catalog.version(org, reg, coll, idx)).manifest.entries)
        await self._each(reversed(indices[-self.VERSIONS:]), one, lambda: files >= self.MANIFEST_FILES)

    async def _url_warmer(self) -> None:
        """The one task that warms looked-up files' URLs, in order (the catalog batches them)."""
        async for detail, entry in self._url_out:
            await self._quietly(self.catalog.file_url, detail, entry.path)

    async def _quiet(self, reader: ObjectReader) -> None:
        """While the opened file is read from the cache, wait (at most ``HOLD_S``) until it is
        closed or has not been read for ``QUIET_S``. Its version was read before, so its small
        files are likely cached too, and looking them up means a disk read each on a cold
        disk: hundreds of them between a large file's reads cost it a tenth of its speed
        (bench R1). A file being downloaded does not wait here: the fetcher holds warm-ups
        back while a reader waits for bytes."""
        with trio.move_on_after(self.HOLD_S):
            await reader.settled()
            while reader.source == "cache":
                idle = trio.current_time() - reader.last_read
                if idle >= self.QUIET_S:
                    return
                await trio.sleep(self.QUIET_S - idle)

    async def _small_files(self, detail: VersionDetail, opened: ManifestEntry | None,
                           reader: ObjectReader | None = None) -> None:
        """The picked files not in the cache yet (on a remount, usually none: they are looked
        up in one thread, in batches, before any fetch is started)."""
        async def one(entry: ManifestEntry) -> None:
            await self.fetcher.warm(detail, entry)

        picked = self._pick_small(detail, opened)
        batch = list(itertools.islice(picked, self.PARALLEL * 8))
        if batch and reader is not None:   # a version of one file has nothing to wait for
            await self._quiet(reader)
        while batch:
            await self._each(await self.fetcher.not_cached(batch), one)
            batch = list(itertools.islice(picked, self.PARALLEL * 8))

    def _pick_small(self, detail: VersionDetail, opened: ManifestEntry | None) -> Iterator[ManifestEntry]:
        """The small stored files to warm: all of them if there are at most ``SMALL_FILES``
        (and ``VERSION_BYTES``), else the ones after ``opened`` in its folder, within both.
        Never ``opened`` itself: its reader is attaching it already."""
        skip = opened.path if opened is not None else None

        def small(e: Any) -> bool:
            return e.__class__ is ManifestEntry and e.ref is None and e.size <= self.SMALL_FILE and e.path != skip

        count = total = 0
        for e in detail.manifest.entries.values():
            if small(e):
                count += 1
                total += e.size
                if count > self.SMALL_FILES or total > self.VERSION_BYTES:
                    break
        else:
            if count:
                yield from sorted((e for e in detail.manifest.entries.values() if small(e)),
                                  key=lambda e: e.path)
            return
        if opened is None:
            return
        count = total = 0
        for e in detail.manifest.following(opened.path):
            if not small(e):
                continue
            count += 1
            total += e.size
            if count > self.SMALL_FILES or total > self.VERSION_BYTES:
                return
            yield e
