"""The catalog: registry names -> versions -> manifests, cached with the right lifetimes.

Listings (orgs, registries, collections) live ``list_ttl`` seconds, alias maps
``alias_ttl`` seconds, and a version's manifest forever, since a version never changes.
Concurrent requests for the same thing share one SDK call (single flight), and every SDK
call runs in a worker thread under one capacity limiter, so a burst of lookups cannot
start a storm of requests.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Hashable, TypeVar

import trio

from .metastore import MetaStore
from .ttl import TtlMap
from .wandb_client import (BackendError, CollectionInfo, CollectionVersions, NotFound, RegistryInfo,
                           VersionDetail, WandbClient)

log = logging.getLogger(__name__)
T = TypeVar("T")


class SingleFlight:
    """At most one call per key in flight; other callers wait for its result."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, tuple[trio.Event, list[Any]]] = {}

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        if key in self._inflight:
            event, box = self._inflight[key]
            await event.wait()
            if isinstance(box[0], BaseException):
                raise box[0]
            return box[0]  # type: ignore[no-any-return]
        event, box = trio.Event(), [None]
        self._inflight[key] = (event, box)
        try:
            result = await fn()
            box[0] = result
            return result
        except BaseException as e:
            box[0] = e
            raise
        finally:
            del self._inflight[key]
            event.set()


class Catalog:
    def __init__(self, client: WandbClient, orgs: list[str] | None = None, *, alias_ttl: float = 30.0,
                 list_ttl: float = 60.0, limiter: trio.CapacityLimiter | None = None,
                 meta: MetaStore | None = None, offline_retry: float = 5.0) -> None:
        self.client = client
        self.fixed_orgs = orgs
        self.alias_ttl = alias_ttl
        self.list_ttl = list_ttl
        self.limiter = limiter or trio.CapacityLimiter(4)
        self._lists: TtlMap[Any] = TtlMap()
        self._versions: dict[tuple[str, str, str, int], VersionDetail] = {}
        self._urls: dict[tuple[str, int], dict[str, str]] = {}
        self._flight = SingleFlight()
        self.sdk_calls = 0
        self.meta = meta
        self.offline_retry = offline_retry
        self.offline_since: float | None = None
        # --lock: (org, registry, collection) -> {alias: index}, in force for the mount's life
        self.locks: dict[tuple[str, str, str], dict[str, int]] = {}
        self.observe: Callable[[str, float], None] | None = None   # W&B call latency, for metrics

    async def _sdk(self, fn: Callable[..., T], *args: Any) -> T:
        self.sdk_calls += 1
        t0 = trio.current_time()
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            took = trio.current_time() - t0
            log.debug("W&B %s%r took %.0f ms", fn.__name__, args[:4], took * 1000)
            if self.observe is not None:
                self.observe(fn.__name__, took)

    async def _cached(self, key: Hashable, ttl: float, fn: Callable[..., T], *args: Any) -> T:
        hit = self._lists.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]

        async def load() -> T:
            try:
                value = await self._sdk(fn, *args)
            except BackendError as e:
                # W&B is unreachable or failing: serve the last known listing, if any, and
                # try W&B again after a short while.
                fallback = self._lists.stale(key)
                if fallback is None and self.meta is not None:
                    fallback = self.meta.load_listing(key)  # type: ignore[arg-type]
                if fallback is None:
                    raise
                self._offline(e)
                return self._lists.put(key, fallback, self.offline_retry)
            self._online()
            if self.meta is not None:
                self.meta.save_listing(key, value)  # type: ignore[arg-type]
            return self._lists.put(key, value, ttl)
        return await self._flight.run(key, load)

    def _offline(self, e: Exception) -> None:
        if self.offline_since is None:
            self.offline_since = trio.current_time()
            log.warning("W&B unreachable (%s); serving the last known listings and cached files", e)

    def _online(self) -> None:
        if self.offline_since is not None:
            log.warning("W&B reachable again after %.0fs", trio.current_time() - self.offline_since)
            self.offline_since = None

    def invalidate(self, prefix: tuple[str, ...] = ()) -> int:
        """Forget listings and aliases (not manifests: versions are immutable).

        ``prefix`` = (org[, registry[, collection]]) limits it to that subtree (and the
        listing that names it); empty forgets everything. Returns how many were dropped.
        """
        if not prefix:
            n = len(self._lists)
            self._lists.clear()
            return n

        def hit(key: Hashable) -> bool:
            if not isinstance(key, tuple) or len(key) < 2:
                return False
            scope = key[1:]   # ("regs", org) / ("colls", org, reg) / ("vers", org, reg, coll)
            return scope[:len(prefix)] == prefix or (len(scope) < len(prefix) and prefix[:len(scope)] == scope)
        return self._lists.drop_where(hit)

    # ---- listings ----------------------------------------------------------------------
    async def orgs(self) -> list[str]:
        if self.fixed_orgs is not None:
            return list(self.fixed_orgs)
        return await self._cached(("orgs",), self.list_ttl, self.client.viewer_orgs)

    async def registries(self, org: str) -> dict[str, RegistryInfo]:
        if org not in await self.orgs():
            raise NotFound(f"organization {org!r} is not mounted")
        regs = await self._cached(("regs", org), self.list_ttl, self.client.registries, org)
        return {r.name: r for r in regs}

    async def collections(self, org: str, registry: str) -> dict[str, CollectionInfo]:
        if registry not in await self.registries(org):
            raise NotFound(f"registry {registry!r} not found in {org!r}")
        colls = await self._cached(("colls", org, registry), self.list_ttl, self.client.collections,
                                   org, registry)
        return {c.name: c for c in colls}

    async def versions(self, org: str, registry: str, collection: str) -> CollectionVersions:
        colls = await self.collections(org, registry)
        if collection not in colls:
            raise NotFound(f"collection {collection!r} not found in {org}/{registry}")
        vers = await self._cached(("vers", org, registry, collection), self.alias_ttl,
                                  self.client.versions, org, registry, collection, colls[collection].type)
        locked = self.locks.get((org, registry, collection))
        if locked:  # a lock file pins these aliases, wherever W&B has moved them since
            vers = CollectionVersions(vers.versions, {**vers.aliases, **{a: i for a, i in locked.items()
                                                                           if i in vers.versions}})
        return vers

    async def resolve(self, org: str, registry: str, collection: str, token: str) -> int:
        """An alias or ``vN`` to a version index, from the (alias-TTL) listing."""
        vers = await self.versions(org, registry, collection)
        if token.startswith("v") and token[1:].isdigit() and str(int(token[1:])) == token[1:]:
            idx = int(token[1:])
            if idx in vers.versions:
                return idx
            raise NotFound(f"{collection}:{token} not found")
        if token in vers.aliases:
            return vers.aliases[token]
        raise NotFound(f"alias {token!r} not found in {collection}")

    # ---- versions ----------------------------------------------------------------------
    async def version(self, org: str, registry: str, collection: str, index: int) -> VersionDetail:
        key = (org, registry, collection, index)
        hit = self._versions.get(key)
        if hit is not None:
            return hit

        async def load() -> VersionDetail:
            detail = None
            if self.meta is not None:  # a version never changes: a saved copy is as good as W&B's
                detail = await trio.to_thread.run_sync(self.meta.load_version, org, registry, collection, index)
            if detail is None:
                detail = await self._sdk(self.client.version, org, registry, collection, f"v{index}")
                if self.meta is not None:
                    await trio.to_thread.run_sync(self.meta.save_version, detail)
            self._versions[key] = detail
            return detail
        return await self._flight.run(("ver",) + key, load)

    async def file_url(self, detail: VersionDetail, path: str, refresh: bool = False) -> str:
        """A signed URL for one file; ``refresh`` asks W&B again (an expired URL got 403)."""
        key = (detail.artifact_id, detail.index)
        urls = None if refresh else self._urls.get(key)
        if urls is None:
            async def load() -> dict[str, str]:
                fresh = await self._sdk(self.client.file_urls, detail)
                self._urls[key] = fresh
                return fresh
            urls = await self._flight.run(("urls",) + key + (refresh,), load)
        if path not in urls:
            raise NotFound(f"no URL for {path!r} in {detail.name}")
        return urls[path]
