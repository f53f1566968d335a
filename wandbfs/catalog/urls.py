"""Signed URLs: fetched for what is read, not for every file of a version.

A small version's URLs come in one request for all of them (W&B pages them 5,000 at a
time; ``WHOLE_VERSION`` files or fewer is one page), which is what ``cat *`` wants. A larger
version's come by name: the file asked for and the files after it in its folder (the likely
next opens, ``BATCH`` at most, ``BATCH_LATER`` once a reader has made ``BATCH_AFTER``
requests in the version), in one request; files asked for while a request is out join the
next one. So opening one file of a version of 200,000 costs one request for 100 URLs,
not 40 pages of 5,000.

A URL refused by storage (expired) is asked for again: the whole version's for a small one
(its URLs were fetched, and so expire, together; one request), by name for a large one.
At most ``MAX_URLS`` are kept; the versions used least recently are dropped first.

If W&B answers a request by name with none of the names asked for (a server that ignores
the filter), that version falls back to the whole listing.

Early: a name looked up at the top of a version whose manifest is still being fetched
(``stat``/``open`` of a full path on a fresh mount) has its URL asked for by name at once,
beside the manifest (``early``): both are one round trip, so the open that likely follows
does not wait for a third. The first ``url`` call of that version takes the answer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, TypeVar

import trio

from wandbfs.model.manifest import ManifestEntry
from wandbfs.sdk.client import FileUrl, NotFound, VersionDetail, VersionRef, WandbClient

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["SignedUrls", "match_urls"]


def match_urls(wanted: dict[str, ManifestEntry], answers: list[FileUrl]) -> dict[str, str]:
    """Which answer is which file asked for. By the manifest digest, which names the bytes
    the URL serves (W&B's query names a file by ``displayName``, which may be only its last
    component: ``a/x.bin`` and ``b/x.bin`` both answer as ``x.bin``); by name only for an
    answer without a digest."""
    by_digest = {a.digest: a.url for a in answers if a.digest}
    by_name = {a.name: a.url for a in answers if not a.digest}
    out: dict[str, str] = {}
    for path, entry in wanted.items():
        url = by_digest.get(entry.digest) or by_name.get(path)
        if url is not None:
            out[path] = url
    return out


@dataclass
class _Want:
    """One file waited for: the URL, or why there is none, once ``done``."""

    done: trio.Event = field(default_factory=trio.Event)
    url: str | None = None
    error: BaseException | None = None


@dataclass
class _Version:
    urls: dict[str, str] = field(default_factory=dict)
    pending: dict[str, _Want] = field(default_factory=dict)   # asked for, not yet requested
    loading: bool = False
    complete: bool = False            # ``urls`` holds the whole version's (one listing)
    requests: int = 0                 # requests by name made for this version
    whole: trio.Event | None = None   # set when the whole-version request in flight ends
    by_name: bool = True      # False: W&B ignored the names; list the whole version


@dataclass
class _Early:
    """A request by name made before the version's manifest was at hand."""

    names: list[str]
    done: trio.Event = field(default_factory=trio.Event)
    answers: list[FileUrl] = field(default_factory=list)


class SignedUrls:
    """The catalog's signed URLs (``Catalog.file_url``)."""

    WHOLE_VERSION = 1000   # files: up to this many, a version's URLs come in one request for all
    BATCH = 100            # names per request for a larger version
    BATCH_LATER = 1000     # ... after BATCH_AFTER requests (a reader going through the folder)
    BATCH_AFTER = 10
    MAX_URLS = 20_000      # URLs kept in memory (about 6 MB)
    MAX_EARLY = 64         # early requests kept unclaimed (a name that was a folder is never opened)

    def __init__(self, client: WandbClient, call: Callable[..., Awaitable[Any]]) -> None:
        """``call``: how a blocking client method is run (the catalog's gate)."""
        self.client = client
        self._call = call
        self._versions: OrderedDict[tuple[str, int], _Version] = OrderedDict()
        self._early: OrderedDict[tuple[str, str, str, int], _Early] = OrderedDict()
        self.requests = 0      # W&B requests made for URLs (tests and status count them)

    def __len__(self) -> int:
        return sum(len(v.urls) for v in self._versions.values())

    def known(self, detail: VersionDetail, path: str) -> bool:
        """Whether a URL for the file is at hand (a warm-up need not ask)."""
        v = self._versions.get((detail.artifact_id, detail.index))
        return v is not None and path in v.urls

    async def url(self, detail: VersionDetail, path: str, refresh: bool = False) -> str:
        """A signed URL for one file; ``refresh``: the last one was refused, ask again."""
        key = (detail.artifact_id, detail.index)
        v = self._versions.get(key)
        if v is None:
            v = self._versions[key] = _Version()
        self._versions.move_to_end(key)
        if refresh:
            v.urls.pop(path, None)
        elif (url := v.urls.get(path)) is not None:
            return url
        elif (early := self._early.pop((detail.org, detail.registry, detail.collection, detail.index), None)):
            await early.done.wait()   # its own deadline (the gate's) bounds it
            v.urls.update(match_urls({p: e for p in early.names if (e := detail.manifest.entries.get(p))},
                                     early.answers))
            if (url := v.urls.get(path)) is not None:
                return url
        if len(detail.manifest.entries) <= self.WHOLE_VERSION or not v.by_name:
            urls = await self._whole_version(detail, v, refresh)
        else:
            return await self._by_name(detail, v, path)
        if path not in urls:
            raise NotFound(f"no URL for {path!r} in {detail.name}")
        return urls[path]

    def early(self, org: str, registry: str, collection: str, index: int, name: str,
              nursery: trio.Nursery) -> None:
        """Ask for ``name``'s URL now, by name, while the version's manifest is loading."""
        key = (org, registry, collection, index)
        ref: VersionRef | None = self.client.version_ref(org, registry, collection, index)
        if ref is None or key in self._early:
            return
        try:
            nursery.start_soon(self._ask_early, ref, early := _Early([name]))
        except RuntimeError:   # the mount is stopping (its nursery closed): nothing is asked
            return
        self._early[key] = early
        while len(self._early) > self.MAX_EARLY:
            self._early.popitem(last=False)

    async def _ask_early(self, ref: VersionRef, early: _Early) -> None:
        try:
            self.requests += 1
            early.answers = await self._call(self.client.file_urls_for, ref, early.names)
        except Exception as e:  # noqa: BLE001 - only a head start: the open asks again
            log.debug("early URL request for %s in %s: %s", early.names, ref.name, e)
        finally:
            early.done.set()

    # ---- a small version: every URL at once ------------------------------------------------
    async def _whole_version(self, detail: VersionDetail, v: _Version, refresh: bool) -> dict[str, str]:
        """Every URL of the version, one request for all (shared by the callers meanwhile)."""
        while True:
            if v.complete and not refresh:
                return v.urls
            if v.whole is None:
                break
            await v.whole.wait()   # someone else's request: its answer (or a failure: try ourselves)
            refresh = False
        v.whole = trio.Event()
        try:
            self.requests += 1
            v.urls = await self._call(self.client.file_urls, detail)
            v.complete = True
        finally:
            v.whole.set()
            v.whole = None
        self._trim()
        return v.urls

    # ---- a large version: by name ----------------------------------------------------------
    async def _by_name(self, detail: VersionDetail, v: _Version, path: str) -> str:
        """Join the next request for ``path``'s URL; the first waiter makes the requests (and
        hands over to the next waiter if it is cancelled)."""
        while True:
            if (url := v.urls.get(path)) is not None:
                return url
            want = v.pending.get(path)
            if want is None:
                want = v.pending[path] = _Want()
            if not v.loading:
                v.loading = True
                try:
                    await self._drain(detail, v)
                finally:
                    v.loading = False
                    for w in list(v.pending.values()):
                        w.done.set()   # unserved waiters wake up and one of them goes on
            else:
                await want.done.wait()
            if want.error is not None:
                raise want.error
            if want.url is not None:
                return want.url
            if v.pending.get(path) is want:
                del v.pending[path]
            if not v.by_name:
                urls = await self._whole_version(detail, v, False)
                if path not in urls:
                    raise NotFound(f"no URL for {path!r} in {detail.name}")
                return urls[path]

    async def _drain(self, detail: VersionDetail, v: _Version) -> None:
        """Request what is pending, a batch at a time, until nothing is."""
        while v.by_name:
            batch = self.BATCH if v.requests < self.BATCH_AFTER else self.BATCH_LATER
            asked = [p for p, w in v.pending.items() if not w.done.is_set()][:batch]
            if not asked:
                return
            names = self._with_neighbours(detail, v, asked, batch)
            wanted = {p: detail.manifest.entries[p] for p in names if p in detail.manifest.entries}
            if not wanted:   # never ask with no names: W&B would answer with every file
                for p in asked:
                    w = v.pending.pop(p, None)
                    if w is not None:
                        w.error = NotFound(f"no file {p!r} in {detail.name}")
                        w.done.set()
                continue
            try:
                self.requests += 1
                v.requests += 1
                answers = await self._call(self.client.file_urls_for, detail, list(wanted))
            except Exception as e:  # noqa: BLE001 - handed to the waiters of this batch
                for p in asked:
                    w = v.pending.pop(p, None)
                    if w is not None:
                        w.error = e
                        w.done.set()
                continue
            found = match_urls(wanted, answers)
            if answers and not found:
                log.info("W&B answered a request for %d named files of %s with none of them: listing "
                         "the whole version instead", len(wanted), detail.name)
                v.by_name = False
                return
            v.urls.update(found)
            for p in asked:
                w = v.pending.pop(p, None)
                if w is None:
                    continue
                w.url = found.get(p)
                if w.url is None:
                    w.error = NotFound(f"no URL for {p!r} in {detail.name}")
                w.done.set()
            self._trim()

    def _with_neighbours(self, detail: VersionDetail, v: _Version, asked: list[str], batch: int) -> list[str]:
        """``asked``, then the files after the first of them in its folder (stored files whose
        URL is not known yet), up to ``batch`` names."""
        names = list(dict.fromkeys(asked))[:batch]
        seen = set(names)
        for i, kid in enumerate(detail.manifest.following(asked[0])):
            if len(names) >= batch or i >= 4 * batch:
                break
            if kid.ref is None and kid.path not in seen and kid.path not in v.urls:
                names.append(kid.path)
        return names

    def _trim(self) -> None:
        """Keep at most ``MAX_URLS``: drop the least recently used versions' (never one with
        requests in flight), then the oldest of the one left."""
        total = len(self)
        for key in list(self._versions):
            if total <= self.MAX_URLS:
                return
            v = self._versions[key]
            if v.loading or v.pending or len(self._versions) == 1:
                continue
            total -= len(v.urls)
            del self._versions[key]
        if total > self.MAX_URLS:
            for v in self._versions.values():
                if v.complete:   # a whole listing is kept whole (it would be asked for again at once)
                    continue
                drop = list(v.urls)[:total - self.MAX_URLS // 2]
                for p in drop:
                    del v.urls[p]
                total -= len(drop)
                if total <= self.MAX_URLS:
                    return


