"""The catalog: registry names -> versions -> manifests, cached with the right lifetimes.

Listings (orgs, registries, collections) live ``list_ttl`` seconds, alias maps
``alias_ttl`` seconds, and a version's manifest forever, since a version never changes.

A lookup asks for one name, so it is answered by name, not by listing every level first:
a collection by the first page of its versions (one request, which for most collections
is the whole listing, aliases included), an alias or ``vN`` the page does not show by
W&B's own resolution of the name (one request); the org's registries are loaded when the
mount starts. What is known needs no request at all: a ``vN`` whose manifest is on disk
(the metastore) is found, with its collection, without asking W&B, and the last known
listings on disk answer lookups of the names they hold.

W&B can hang, so nothing that has been seen once waits for it again: an expired listing is
served at once and refreshed in the background (stale-while-revalidate, one refresh per key
at a time). Only a name never seen waits, and only ``lookup_timeout`` seconds, then EIO
(``Unreachable``: never ENOENT for "W&B did not answer"); the load goes on in the background
under the gate's own deadline, so a retry finds it. Every SDK call passes the ``Gate``
(gate.py): a worker thread, a deadline, a circuit breaker.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Awaitable, Callable, Hashable, TypeVar

import trio

from wandbfs.catalog.flight import SingleFlight
from wandbfs.catalog.metastore import SAVED_KINDS, MetaStore
from wandbfs.catalog.urls import SignedUrls
from wandbfs.model.names import home_entity, version_index
from wandbfs.model.ttl import TtlMap
from wandbfs.sdk.client import (BackendError, Denied, CollectionInfo, CollectionVersions, NotFound, RegistryInfo,
                                VersionDetail, VersionSummary, VersionsPage, WandbClient)
from wandbfs.sdk.gate import Gate

log = logging.getLogger(__name__)
T = TypeVar("T")
KEEP_GRACE_S = 5.0
"""How long an unmount waits for a version record still being written."""

__all__ = ["Catalog", "SingleFlight"]

Key = tuple[Any, ...]
"""A cached answer: ("orgs",), ("regs", org), ("colls", org, reg), ("vers", org, reg, coll)
(every version), ("head", org, reg, coll) (the first page, when there are more),
("ents",) (the viewer's entities), ("ent", entity) (whether W&B knows it),
("name", org, reg, coll, token) (one alias or vN as W&B resolved it)."""


def pick(vers: CollectionVersions, token: str) -> VersionSummary | None:
    """The version ``token`` (alias or ``vN``) names in a listing, if it is there."""
    idx = version_index(token)
    if idx is None:
        idx = vers.aliases.get(token)
    return vers.versions.get(idx) if idx is not None else None


def collection_of(name: str, vers: CollectionVersions, type_name: str | None = None) -> CollectionInfo:
    """A collection known from its versions (no registry listing): created with its first."""
    created = min((v.created_at for v in vers.versions.values()), default=0.0)
    return CollectionInfo(name, type_name or "", created)


class Catalog:
    def __init__(self, client: WandbClient, orgs: list[str] | None = None, *, alias_ttl: float = 30.0,
                 list_ttl: float = 60.0, gate: Gate | None = None, meta: MetaStore | None = None,
                 lookup_timeout: float = float("inf"), locks: dict[tuple[str, str, str], dict[str, int]] | None = None,
                 nursery: trio.Nursery | None = None) -> None:
        """``locks``: the aliases ``--lock`` keeps on their versions; ``nursery``: the mount's,
        where loads and background refreshes run, starting at once with what every path
        needs first (the orgs and their registries, see ``_prime``); without one, callers
        wait and nothing is loaded ahead."""
        self.client = client
        self.fixed_orgs = orgs
        self.alias_ttl = alias_ttl
        self.list_ttl = list_ttl
        self.lookup_timeout = lookup_timeout
        self.gate = gate or Gate()
        self._lists: TtlMap[Any] = TtlMap(clock=trio.current_time)
        self._versions: dict[tuple[str, str, str, int], VersionDetail] = {}
        self.urls = SignedUrls(client, self._sdk)   # signed URLs, fetched for what is read
        self._flight = SingleFlight()
        self._flight.nursery = nursery
        self._disk_read: set[Key] = set()    # listing keys whose copy on disk was read already
        self.meta = meta
        # --lock: (org, registry, collection) -> {alias: index}, in force for the mount's life
        self.locks: dict[tuple[str, str, str], dict[str, int]] = locks or {}
        if nursery is not None:
            nursery.start_soon(self._prime)

    @property
    def nursery(self) -> trio.Nursery | None:
        return self._flight.nursery

    @nursery.setter
    def nursery(self, n: trio.Nursery | None) -> None:
        """Where loads and background refreshes run (the mount's); without one, callers wait."""
        self._flight.nursery = n

    @property
    def sdk_calls(self) -> int:
        return self.gate.calls

    @property
    def offline_since(self) -> float | None:
        """When (trio clock) W&B stopped answering, or None."""
        return self.gate.breaker.opened_at

    async def _sdk(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.gate.call(fn, *args)

    async def _prime(self) -> None:
        """At mount start, in the background: the orgs, then per org what the SDK asks once
        (``client.prepare``) and the registries, so that a path's first lookups find them and
        its own requests are only the collection's and the manifest's. Best effort."""
        try:
            orgs = await self.orgs()
        except Exception as e:  # noqa: BLE001 - the lookups will ask again, bounded
            log.debug("loading the organizations at start: %s", e)
            return

        async def quietly(what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
            try:
                await fn(*args)
            except Exception as e:  # noqa: BLE001
                log.debug("loading %s at start: %s", what, e)
        async with trio.open_nursery() as n:
            for org in orgs:
                n.start_soon(quietly, f"{org}'s search features", self._sdk, self.client.prepare, org)
                n.start_soon(quietly, f"{org}'s registries", self.registries, org)

    # ---- cached answers ------------------------------------------------------------------
    def _load(self, key: Key) -> Awaitable[Any]:
        """The W&B load behind a key (its kind says which), stored with its TTL when it lands."""
        kind, args = key[0], key[1:]
        if kind == "head":
            return self._load_head(*args)
        if kind == "access":
            return self._load_access(*args)
        ttl, name = {"orgs": (self.list_ttl, "viewer_orgs"), "regs": (self.list_ttl, "registries"),
                     "ents": (self.list_ttl, "viewer_entities"), "ent": (self.list_ttl, "entity_exists"),
                     "colls": (self.list_ttl, "collections"), "vers": (self.alias_ttl, "versions"),
                     "name": (self.alias_ttl, "find_version")}[kind]
        fn = getattr(self.client, name)
        return self._load_listing(key, ttl, fn, args)

    async def _load_listing(self, key: Key, ttl: float, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        value = await self._sdk(fn, *args)
        if self.meta is not None and key[0] in SAVED_KINDS:
            self.meta.save_listing(key, value)
        return self._lists.put(key, value, ttl)

    def _what(self, key: Key) -> str:
        return "/".join(map(str, key[1:])) or "the organizations"

    def _revalidate(self, key: Key) -> None:
        """Reload ``key`` in the background (once at a time), if there is a background."""
        if self.nursery is not None:
            self._flight.start(key, lambda: self._load(key))

    async def _wait(self, key: Key) -> Any:
        """Load ``key`` now (or join its load), waiting at most ``lookup_timeout``."""
        return await self._flight.run(key, lambda: self._load(key), self.lookup_timeout, self._what(key))

    async def _stale(self, key: Key) -> Any:
        """The last known value of ``key``: in memory, else the copy on disk (read once,
        then kept in memory as expired)."""
        value = self._lists.stale(key)
        if value is None and self.meta is not None and key[0] in SAVED_KINDS and key not in self._disk_read:
            self._disk_read.add(key)
            value = await trio.to_thread.run_sync(self.meta.load_listing, key)
            if value is not None and self._lists.stale(key) is None:
                self._lists.put(key, value, 0.0)   # expired: served while a reload is asked for
            value = self._lists.stale(key)
        return value

    async def _listing(self, key: Key, has: Callable[[Any], bool] | None = None) -> Any:
        """A listing: fresh from memory, else the stale copy at once (refreshed in the
        background), else W&B within ``lookup_timeout``, else the copy on disk.

        ``has`` (a lookup) says whether a listing answers the question at hand: a name
        missing from a stale listing may be new, so that caller waits for the refresh
        (bounded), and gets EIO rather than ENOENT when W&B does not answer. A lookup is
        answered from the last known listing on disk too; a whole listing (``ls``, no
        ``has``) asks W&B first on a new mount, and falls back to the disk copy."""
        fresh = self._lists.get(key)
        if fresh is not None:
            return fresh
        stale = self._lists.stale(key) if has is None else await self._stale(key)
        if stale is not None and self.nursery is not None:
            self._revalidate(key)
            if has is None or has(stale):
                return stale
            return await self._wait(key)
        try:
            return await self._wait(key)
        except BackendError:
            fallback = await self._stale(key)
            if fallback is None or (has is not None and not has(fallback)):
                raise
            self._lists.put(key, fallback, 0.0)  # stale at once: served, and refreshed when asked again
            return fallback

    def _under(self, prefix: tuple[str, ...]) -> Callable[[Hashable], bool]:
        """Listing keys in the subtree ``prefix`` = (org[, registry[, collection]]), and the
        listings that name it; an empty prefix is everything."""
        def hit(key: Hashable) -> bool:
            if not prefix:
                return True
            if not isinstance(key, tuple) or len(key) < 2:
                return False
            scope = key[1:]   # ("regs", org) / ("colls", org, reg) / ("vers", org, reg, coll) / ...
            return scope[:len(prefix)] == prefix or (len(scope) < len(prefix) and prefix[:len(scope)] == scope)
        return hit

    def invalidate(self, prefix: tuple[str, ...] = ()) -> int:
        """Expire listings and aliases under ``prefix`` (not manifests: versions are immutable).

        Expired, not dropped: the stale copy is still served while W&B does not answer.
        Returns how many were expired."""
        return len(self._lists.expire_where(self._under(prefix)))

    async def refresh(self, prefix: tuple[str, ...] = ()) -> int:
        """Expire the listings under ``prefix`` and load them again now, waiting at most
        ``lookup_timeout`` (W&B hanging keeps the stale copies). Returns how many expired."""
        keys = self._lists.expire_where(self._under(prefix))
        own = {1: "regs", 2: "colls", 3: "vers"}.get(len(prefix))
        if own is not None and (own,) + prefix not in keys:
            keys.append((own,) + prefix)   # what is in the folder now, listed or not before (a rename)

        async def reload(key: Key) -> None:
            try:
                await self._wait(key)
            except Exception as e:  # noqa: BLE001 - a refused key or odd answer must not end the refresh
                log.info("refresh of %s: %s (the last known listing stays)", "/".join(map(str, key)), e)
        async with trio.open_nursery() as n:
            for key in keys:
                n.start_soon(reload, key)
        return len(keys)

    # ---- listings ----------------------------------------------------------------------
    async def orgs(self, want: str | None = None) -> list[str]:
        if self.fixed_orgs is not None:
            return list(self.fixed_orgs)
        return await self._listing(("orgs",), None if want is None else (lambda v: want in v))  # type: ignore[no-any-return]

    async def entities(self) -> list[str]:
        """The entities whose projects the root lists as ``@<entity>`` (the viewer's own and
        its teams'); any other is found by lookup (:meth:`entity_exists`)."""
        return await self._listing(("ents",))  # type: ignore[no-any-return]

    async def known_entity(self, entity: str) -> bool:
        """Has W&B said this entity exists, now or before (the copies on disk too)? No W&B:
        a pasted ``<entity>/...`` path on a new mount must not wait for it."""
        for key in (("ents",), ("ent", entity)):
            value = self._lists.get(key)
            if value is None and self.nursery is not None:
                value = await self._stale(key)
            if value is True or (isinstance(value, list) and entity in value):
                return True
        return False

    async def entity_exists(self, entity: str) -> bool:
        """Does W&B know this entity? Listed ones need no request; a known answer (memory
        or disk) is served at once and revalidated."""
        fresh = self._lists.get(("ents",))
        if fresh is not None and entity in fresh:
            return True
        return bool(await self._listing(("ent", entity), lambda v: True))

    async def known_orgs(self) -> list[str]:
        """The orgs as last known (memory or disk), without asking W&B."""
        if self.fixed_orgs is not None:
            return list(self.fixed_orgs)
        value = self._lists.get(("orgs",))
        if value is None and self.nursery is not None:
            value = await self._stale(("orgs",))
        return list(value or [])

    async def registry_access(self, org: str, registry: str) -> None:
        """``Denied`` if W&B refuses the key ``registry`` (a name its listing lacks). The
        answer is kept ``list_ttl`` (a miss asked again does not ask again), asked within
        ``lookup_timeout``; a W&B that does not answer leaves the listing's "no" standing."""
        key = ("access", org, registry)
        verdict = self._lists.get(key)
        if verdict is None:
            try:
                verdict = await self._flight.run(key, lambda: self._load(key), self.lookup_timeout,
                                                 f"access to {org}/{registry}")
            except BackendError:
                return
        if verdict:
            raise Denied(verdict)

    async def _load_access(self, org: str, registry: str) -> str:
        """W&B's refusal of the registry to this key ("" when open or absent), kept."""
        try:
            await self._sdk(self.client.registry_access, org, registry)
            verdict = ""
        except Denied as e:
            verdict = str(e) or "permission denied"
        except NotFound:
            verdict = ""
        return self._lists.put(("access", org, registry), verdict, self.list_ttl)

    async def registries(self, org: str, want: str | None = None) -> dict[str, RegistryInfo]:
        """``want``: the registry the caller looks for (a stale listing without it is refreshed
        first). For an ``@entity`` home: its projects."""
        if (entity := home_entity(org)) is not None:
            if not await self.entity_exists(entity):
                raise NotFound(f"no entity {entity!r}")
        elif org not in await self.orgs(want=org):
            raise NotFound(f"organization {org!r} is not mounted")
        regs = await self._listing(("regs", org), None if want is None else
                                   (lambda v: any(r.name == want for r in v)))
        return {r.name: r for r in regs}

    async def collections(self, org: str, registry: str, want: str | None = None,
                          want_type: str | None = None) -> dict[str, CollectionInfo]:
        """``want``/``want_type``: the collection, or a collection of the artifact type, a
        lookup looks for (answered from a stale listing that has it)."""
        if registry not in await self.registries(org, want=registry):
            raise NotFound(f"registry {registry!r} not found in {org!r}")
        has = None
        if want is not None:
            has = lambda v: any(c.name == want for c in v)  # noqa: E731
        elif want_type is not None:
            has = lambda v: any(c.type == want_type for c in v)  # noqa: E731
        colls = await self._listing(("colls", org, registry), has)
        return {c.name: c for c in colls}

    async def versions(self, org: str, registry: str, collection: str) -> CollectionVersions:
        """Every version of a collection and where its aliases point (``ls``); a lookup of one
        name uses ``find_version``, which does not need all of them."""
        vers: CollectionVersions = await self._listing(("vers", org, registry, collection))
        locked = self.locks.get((org, registry, collection))
        if locked:  # a lock file pins these aliases, wherever W&B has moved them since
            vers = CollectionVersions(vers.versions, {**vers.aliases, **{a: i for a, i in locked.items()
                                                                           if i in vers.versions}})
        return vers

    # ---- lookups by name -----------------------------------------------------------------
    async def _head(self, org: str, registry: str, collection: str) -> VersionsPage:
        """The first page of the collection's versions from W&B (bounded, shared)."""
        return await self._wait(("head", org, registry, collection))  # type: ignore[no-any-return]

    async def _load_head(self, org: str, registry: str, collection: str) -> VersionsPage:
        """One request; a complete page is the collection's listing, else the rest is loaded
        in the background (for ``ls``) while the page answers what it holds."""
        page = await self._sdk(self.client.versions_head, org, registry, collection)
        vers_key = ("vers", org, registry, collection)
        if page.complete:
            if self.meta is not None:
                self.meta.save_listing(vers_key, page.versions)
            self._lists.put(vers_key, page.versions, self.alias_ttl)
        else:
            self._lists.put(("head", org, registry, collection), page, self.alias_ttl)
            self._revalidate(vers_key)
        return page

    def _seen(self, org: str, registry: str, collection: str) -> CollectionVersions | None:
        """Fresh versions of the collection in memory: its listing, else its first page."""
        vers = self._lists.get(("vers", org, registry, collection))
        if vers is None and (head := self._lists.get(("head", org, registry, collection))) is not None:
            vers = head.versions
        return vers  # type: ignore[no-any-return]

    async def collection(self, org: str, registry: str, collection: str) -> CollectionInfo:
        """A collection looked up by name, without listing the registry when it can be helped:
        the registry's fresh listing says yes or no; fresh versions of it say yes; so does a
        version of it on disk (it existed, like its versions, with no request); a stale
        listing naming it says yes (and is reloaded in the background); else the first page
        of its versions from W&B (one request). A collection with no versions at all, or a
        name W&B does not know, is left to the registry's listing."""
        colls_key = ("colls", org, registry)
        listed = self._lists.get(colls_key)
        if listed is not None:
            return self._named(listed, collection, registry)
        if (vers := self._seen(org, registry, collection)) and vers.versions:
            return collection_of(collection, vers)
        if self.meta is not None and await trio.to_thread.run_sync(self.meta.has_versions, org, registry, collection):
            return CollectionInfo(collection, "", 0.0)
        if self.nursery is not None:
            stale = await self._stale(colls_key)
            if stale is not None and any(c.name == collection for c in stale):
                self._revalidate(colls_key)
                return self._named(stale, collection, registry)
        page = await self._head(org, registry, collection)
        if page.versions.versions:
            return collection_of(collection, page.versions, page.type)
        colls = await self.collections(org, registry, want=collection)
        if collection not in colls:
            raise NotFound(f"collection {collection!r} not found in {org}/{registry}")
        return colls[collection]

    @staticmethod
    def _named(colls: list[CollectionInfo], collection: str, registry: str) -> CollectionInfo:
        for c in colls:
            if c.name == collection:
                return c
        raise NotFound(f"collection {collection!r} not found in {registry}")

    async def find_version(self, org: str, registry: str, collection: str, token: str) -> VersionSummary:
        """An alias or ``vN`` looked up by name, from what is known before W&B is asked.

        In order: the collection's fresh listing (yes or no); a ``vN`` whose manifest is
        known, in memory or on disk (versions are immutable: no request); the fresh first
        page; the last known listing (memory or disk) naming it, reloaded in the background;
        the name as W&B last resolved it (alias TTL; stale: served and reloaded). Then W&B:
        the first page if none is fresh (one request; complete, it says no too), else the
        name resolved by W&B itself (one request; ``NotFound`` is a real miss)."""
        locked = self.locks.get((org, registry, collection), {})
        if token in locked:   # --lock: this alias stays on its version (while that version exists)
            try:
                return await self.find_version(org, registry, collection, f"v{locked[token]}")
            except NotFound:
                pass
        vers_key = ("vers", org, registry, collection)
        full = self._lists.get(vers_key)
        if full is not None:
            return self._picked(full, token, collection)
        idx = version_index(token)
        if idx is not None and (detail := await self._known_version(org, registry, collection, idx)) is not None:
            if self._lists.stale(vers_key) is not None:
                # Served without W&B, but this mount has listed the collection and the
                # listing expired: reload it in the background, so a version deleted since
                # is gone once it lands (the fresh listing above answers no).
                self._revalidate(vers_key)
            return VersionSummary(idx, tuple(a for a in detail.aliases if version_index(a) is None),
                                  detail.created_at, detail.artifact_id)
        head = self._lists.get(("head", org, registry, collection))
        if head is not None and (hit := pick(head.versions, token)) is not None:
            return hit
        if self.nursery is not None:
            stale = await self._stale(vers_key)
            if stale is not None and (hit := pick(stale, token)) is not None:
                self._revalidate(vers_key)
                return hit
        if head is None:
            page = await self._head(org, registry, collection)
            if page.complete:
                return self._picked(page.versions, token, collection)
            if (hit := pick(page.versions, token)) is not None:
                return hit
        return await self._listing(("name", org, registry, collection, token), lambda v: True)  # type: ignore[no-any-return]

    def listed_version(self, org: str, registry: str, collection: str, token: str) -> bool | None:
        """Whether the collection's fresh listing has this ``vN`` or alias; None: no fresh
        listing says (after ``refresh``, one does unless W&B did not answer)."""
        vers = self._lists.get(("vers", org, registry, collection))
        return None if vers is None else pick(vers, token) is not None

    def listed_collection(self, org: str, registry: str, collection: str) -> bool | None:
        """Whether the registry's fresh listing has this collection; None: none says."""
        colls = self._lists.get(("colls", org, registry))
        return None if colls is None else any(c.name == collection for c in colls)

    @staticmethod
    def _picked(vers: CollectionVersions, token: str, collection: str) -> VersionSummary:
        hit = pick(vers, token)
        if hit is None:
            raise NotFound(f"{collection}:{token} not found")
        return hit

    async def resolve(self, org: str, registry: str, collection: str, token: str) -> int:
        """An alias or ``vN`` to a version index (``find_version``'s)."""
        return (await self.find_version(org, registry, collection, token)).index

    # ---- versions ----------------------------------------------------------------------
    INLINE_BYTES = 64 << 10
    """A version kept on disk up to this size is read on the trio thread: a worker thread's
    round trip costs more than the read (a remount reading 300 small versions: 0.2 s)."""

    async def _from_disk(self, org: str, registry: str, collection: str, index: int) -> VersionDetail | None:
        """The version as the metastore keeps it, or None (then no thread was started)."""
        if self.meta is None:
            return None
        size = self.meta.version_size(org, registry, collection, index)
        if size is None:
            return None
        if size <= self.INLINE_BYTES:
            return self.meta.load_version(org, registry, collection, index)
        return await trio.to_thread.run_sync(self.meta.load_version, org, registry, collection, index)

    async def _known_version(self, org: str, registry: str, collection: str, index: int) -> VersionDetail | None:
        """The version if its manifest is known already, in memory or on disk; no W&B."""
        key = (org, registry, collection, index)
        hit = self._versions.get(key)
        if hit is None and (hit := await self._from_disk(org, registry, collection, index)) is not None:
            self._versions[key] = hit
        return hit

    async def version(self, org: str, registry: str, collection: str, index: int,
                      on_remote: Callable[[], None] | None = None) -> VersionDetail:
        """``on_remote``: called when the manifest has to come from W&B (not memory or disk),
        before it is asked for (a lookup starts its file's URL request beside it)."""
        key = (org, registry, collection, index)
        hit = self._versions.get(key)
        if hit is not None:
            return hit

        async def load() -> VersionDetail:
            # A version never changes: a saved copy is as good as W&B's.
            detail = await self._from_disk(org, registry, collection, index)
            if detail is None:
                if on_remote is not None:
                    on_remote()
                detail = await self._sdk(self.client.version, org, registry, collection, f"v{index}")
                if self.meta is not None:   # the lookup does not wait for the disk (with a nursery)
                    if self.nursery is not None:
                        self.nursery.start_soon(self._keep, detail)
                    else:
                        await self._keep(detail)
                detail = dataclasses.replace(detail, raw_manifest=b"")   # saved: the parse is what is kept
            self._versions[key] = detail
            return detail
        return await self._flight.run(("ver",) + key, load, self.lookup_timeout, f"{collection}:v{index}")

    async def _keep(self, detail: VersionDetail) -> None:
        """The version on disk, for later mounts and outages; a failure only costs that.
        Shielded, so an unmount right after a read still keeps the version (the next mount
        may be offline), but for at most ``KEEP_GRACE_S``: a hung disk must not hold the exit."""
        assert self.meta is not None
        try:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + KEEP_GRACE_S):
                await trio.to_thread.run_sync(self.meta.save_version, detail, abandon_on_cancel=True)
        except Exception as e:  # noqa: BLE001 - runs in the mount's nursery: must not end it
            log.warning("could not keep %s on disk: %s", detail.name, e)

    async def file_url(self, detail: VersionDetail, path: str, refresh: bool = False) -> str:
        """A signed URL for one file; ``refresh`` asks W&B again (an expired URL got 403).
        Fetched for what is read (``urls.py``), not for all of a large version."""
        return await self.urls.url(detail, path, refresh)
