"""Warm-ups: what a listing, a lookup or a first open says is likely next, fetched ahead.

Listing a collection loads its versions' manifests (the next ``ls vN`` answers from
memory); looking up a file gets its version's signed URLs (an open is likely); the first
open in a version fetches its small files (``cat *``, config + tokenizer). Each runs once
per collection or version, in the background, bounded, and never lets a failure reach a
reader. Not the ``wandbfs prefetch`` command, which fills the cache without a mount.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable

import trio

from wandbfs.catalog.catalog import Catalog
from wandbfs.fill.fetcher import Fetcher
from wandbfs.model.manifest import ManifestEntry
from wandbfs.sdk.client import VersionDetail

log = logging.getLogger(__name__)

__all__ = ["Warmups"]


class Warmups:
    """The mount's warm-ups; off with ``--no-warm``, idle until it has a nursery."""

    VERSIONS = 2000          # manifests loaded ahead when a collection is listed
    SMALL_FILE = 4 << 20     # files up to this size are fetched when their version is first opened
    VERSION_BYTES = 256 << 20
    PARALLEL = 8

    def __init__(self, catalog: Catalog, fetcher: Fetcher, *, enabled: bool = True,
                 nursery: trio.Nursery | None = None) -> None:
        self.catalog = catalog
        self.fetcher = fetcher
        self.enabled = enabled
        self.nursery = nursery
        self._started: set[tuple[Any, ...]] = set()   # versions/collections whose warm-up has started

    # ---- what the handlers say happened ---------------------------------------------
    def collection_listed(self, org: str, reg: str, coll: str, versions: Iterable[int]) -> None:
        key = ("coll", org, reg, coll)
        if key not in self._started:   # don't sort a big listing on every readdir
            self._start(key, self._manifests, org, reg, coll, sorted(versions))

    def file_looked_up(self, detail: VersionDetail, entry: ManifestEntry) -> None:
        """An open is likely: get the version's URLs, unless the file is in the cache already
        (its open needs no URL, and a remount reading cached versions asks W&B nothing)."""
        if self.enabled and self.fetcher.cache.lookup(entry) is None:
            self._start(("urls", detail.artifact_id, detail.index), self._urls, detail)

    def file_opened(self, detail: VersionDetail) -> None:
        self._start(("files", detail.artifact_id, detail.index), self._small_files, detail)

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

    async def _manifests(self, org: str, reg: str, coll: str, indices: list[int]) -> None:
        async with trio.open_nursery() as n:
            for idx in indices[-self.VERSIONS:]:
                n.start_soon(self._quietly, self.catalog.version, org, reg, coll, idx)

    async def _urls(self, detail: VersionDetail) -> None:
        first = next((p for p, e in detail.manifest.entries.items() if not e.ref), None)
        if first is not None:
            await self.catalog.file_url(detail, first)

    async def _small_files(self, detail: VersionDetail) -> None:
        small = [e for _, e in sorted(detail.manifest.entries.items())
                 if not e.ref and e.size <= self.SMALL_FILE]
        if not small or sum(e.size for e in small) > self.VERSION_BYTES:
            return
        sem = trio.Semaphore(self.PARALLEL)

        async def one(entry: ManifestEntry) -> None:
            async with sem:
                await self.fetcher.warm(detail, entry)
        async with trio.open_nursery() as n:
            for e in small:
                n.start_soon(self._quietly, one, e)
