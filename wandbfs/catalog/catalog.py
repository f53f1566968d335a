"""The catalog: registry names -> versions -> manifests, cached with the right lifetimes.

Listings (orgs, registries, collections) live ``list_ttl`` seconds, alias maps
``alias_ttl`` seconds, and a version's manifest forever, since a version never changes.

W&B can hang, so nothing that has been seen once waits for it again: an expired listing is
served at once and refreshed in the background (stale-while-revalidate, one refresh per key
at a time). Only a name never seen waits, and only ``lookup_timeout`` seconds, then EIO
(``Unreachable``: never ENOENT for "W&B did not answer"); the load goes on in the background
under the gate's own deadline, so a retry finds it. Every SDK call passes the ``Gate``
(gate.py): a worker thread, a deadline, a circuit breaker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, TypeVar

import trio

from wandbfs.sdk.gate import Gate
from wandbfs.catalog.metastore import MetaStore
from wandbfs.model.names import version_index
from wandbfs.model.ttl import TtlMap
from wandbfs.sdk.client import (BackendError, CollectionInfo, CollectionVersions, NotFound, RegistryInfo,
                           Unreachable, VersionDetail, WandbClient)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Flight:
    """One load in progress; every caller for the same key waits on it (single flight)."""

    done: trio.Event = field(default_factory=trio.Event)
    value: Any = None
    error: BaseException | None = None
    inline: Callable[[], Awaitable[Any]] | None = None   # no nursery: the first waiter runs it


class SingleFlight:
    """At most one load per key; callers wait for its result, each for as long as it may.

    With a nursery the load runs there, so it outlives a caller that stopped waiting (the
    next caller finds its result); without one it runs in the first waiting caller's task.
    """

    def __init__(self) -> None:
        self._inflight: dict[Hashable, _Flight] = {}
        self.nursery: trio.Nursery | None = None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._inflight

    def start(self, key: Hashable, fn: Callable[[], Awaitable[Any]]) -> _Flight:
        """The load of ``key``, started now unless one is already running."""
        flight = self._inflight.get(key)
        if flight is None:
            flight = self._inflight[key] = _Flight()
            if self.nursery is not None:
                self.nursery.start_soon(self._run, key, flight, fn)
            else:
                flight.inline = fn
        return flight

    async def _run(self, key: Hashable, flight: _Flight, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            flight.value = await fn()
        except Exception as e:  # noqa: BLE001 - handed to every waiter
            flight.error = e
        except BaseException:
            flight.error = Unreachable("the lookup was abandoned (no answer in time)")
            raise
        finally:
            if self._inflight.get(key) is flight:
                del self._inflight[key]
            flight.done.set()

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]], timeout: float = float("inf"),
                  what: str = "") -> T:
        """The result of the (shared) load, waiting at most ``timeout`` seconds for it."""
        flight = self.start(key, fn)
        with trio.move_on_after(timeout):
            if flight.inline is not None:
                inline, flight.inline = flight.inline, None
                await self._run(key, flight, inline)
            else:
                await flight.done.wait()
        if not flight.done.is_set():
            raise Unreachable(f"W&B did not answer {what or 'a lookup'} within {timeout:g}s (--lookup-timeout)")
        if flight.error is not None:
            raise flight.error
        return flight.value  # type: ignore[no-any-return]


class Catalog:
    def __init__(self, client: WandbClient, orgs: list[str] | None = None, *, alias_ttl: float = 30.0,
                 list_ttl: float = 60.0, gate: Gate | None = None, meta: MetaStore | None = None,
                 lookup_timeout: float = float("inf"), locks: dict[tuple[str, str, str], dict[str, int]] | None = None,
                 nursery: trio.Nursery | None = None) -> None:
        """``locks``: the aliases ``--lock`` keeps on their versions; ``nursery``: the mount's,
        where loads and background refreshes run (without one, callers wait)."""
        self.client = client
        self.fixed_orgs = orgs
        self.alias_ttl = alias_ttl
        self.list_ttl = list_ttl
        self.lookup_timeout = lookup_timeout
        self.gate = gate or Gate()
        self._lists: TtlMap[Any] = TtlMap(clock=trio.current_time)
        self._versions: dict[tuple[str, str, str, int], VersionDetail] = {}
        self._urls: dict[tuple[str, int], dict[str, str]] = {}
        self._flight = SingleFlight()
        self._flight.nursery = nursery
        self._loaders: dict[tuple[Any, ...], tuple[float, Callable[..., Any], tuple[Any, ...]]] = {}
        self.meta = meta
        # --lock: (org, registry, collection) -> {alias: index}, in force for the mount's life
        self.locks: dict[tuple[str, str, str], dict[str, int]] = locks or {}

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

    async def _listing(self, key: tuple[Any, ...], ttl: float, fn: Callable[..., T], *args: Any,
                       has: Callable[[T], bool] = lambda v: True) -> T:
        """A listing: fresh from memory, else the stale copy at once (refreshed in the
        background), else W&B within ``lookup_timeout``, else the copy on disk.

        ``has`` says whether a listing answers the question at hand: a name missing from a
        stale listing may be new, so that caller waits for the refresh (bounded), and gets
        EIO rather than ENOENT when W&B does not answer."""
        self._loaders[key] = (ttl, fn, args)
        fresh = self._lists.get(key)
        if fresh is not None:
            return fresh  # type: ignore[no-any-return]
        stale = self._lists.stale(key)
        what = "/".join(map(str, key[1:])) or "the organizations"
        if stale is not None and self.nursery is not None:
            self._flight.start(key, lambda: self._load_listing(key, ttl, fn, args))  # revalidate
            if has(stale):
                return stale  # type: ignore[no-any-return]
            return await self._flight.run(key, lambda: self._load_listing(key, ttl, fn, args),
                                          self.lookup_timeout, what)
        try:
            return await self._flight.run(key, lambda: self._load_listing(key, ttl, fn, args),
                                          self.lookup_timeout, what)
        except BackendError:
            fallback = stale
            if fallback is None and self.meta is not None:
                fallback = self.meta.load_listing(key)
            if fallback is None or not has(fallback):
                raise
            self._lists.put(key, fallback, 0.0)  # stale at once: served, and refreshed when asked again
            return fallback  # type: ignore[no-any-return]

    async def _load_listing(self, key: tuple[Any, ...], ttl: float, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        value = await self._sdk(fn, *args)
        if self.meta is not None:
            self.meta.save_listing(key, value)
        return self._lists.put(key, value, ttl)

    def _under(self, prefix: tuple[str, ...]) -> Callable[[Hashable], bool]:
        """Listing keys in the subtree ``prefix`` = (org[, registry[, collection]]), and the
        listings that name it; an empty prefix is everything."""
        def hit(key: Hashable) -> bool:
            if not prefix:
                return True
            if not isinstance(key, tuple) or len(key) < 2:
                return False
            scope = key[1:]   # ("regs", org) / ("colls", org, reg) / ("vers", org, reg, coll)
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

        async def reload(key: tuple[Any, ...]) -> None:
            ttl, fn, args = self._loaders[key]
            try:
                await self._flight.run(key, lambda: self._load_listing(key, ttl, fn, args), self.lookup_timeout)
            except Exception as e:  # noqa: BLE001 - a refused key or odd answer must not end the refresh
                log.info("refresh of %s: %s (the last known listing stays)", "/".join(map(str, key)), e)
        async with trio.open_nursery() as n:
            for key in keys:
                if key in self._loaders:
                    n.start_soon(reload, key)
        return len(keys)

    # ---- listings ----------------------------------------------------------------------
    async def orgs(self, want: str | None = None) -> list[str]:
        if self.fixed_orgs is not None:
            return list(self.fixed_orgs)
        return await self._listing(("orgs",), self.list_ttl, self.client.viewer_orgs,
                                   has=lambda v: want is None or want in v)

    async def registries(self, org: str, want: str | None = None) -> dict[str, RegistryInfo]:
        """``want``: the registry the caller looks for (a stale listing without it is refreshed first)."""
        if org not in await self.orgs(want=org):
            raise NotFound(f"organization {org!r} is not mounted")
        regs = await self._listing(("regs", org), self.list_ttl, self.client.registries, org,
                                   has=lambda v: want is None or any(r.name == want for r in v))
        return {r.name: r for r in regs}

    async def collections(self, org: str, registry: str, want: str | None = None) -> dict[str, CollectionInfo]:
        if registry not in await self.registries(org, want=registry):
            raise NotFound(f"registry {registry!r} not found in {org!r}")
        colls = await self._listing(("colls", org, registry), self.list_ttl, self.client.collections,
                                    org, registry, has=lambda v: want is None or any(c.name == want for c in v))
        return {c.name: c for c in colls}

    async def versions(self, org: str, registry: str, collection: str, want: str | None = None) -> CollectionVersions:
        """``want``: an alias or ``vN`` the caller resolves (refreshes a stale listing lacking it)."""
        colls = await self.collections(org, registry, want=collection)
        if collection not in colls:
            raise NotFound(f"collection {collection!r} not found in {org}/{registry}")

        def has(v: CollectionVersions) -> bool:
            if want is None or want in v.aliases:
                return True
            return version_index(want) in v.versions
        vers = await self._listing(("vers", org, registry, collection), self.alias_ttl,
                                   self.client.versions, org, registry, collection, colls[collection].type,
                                   has=has)
        locked = self.locks.get((org, registry, collection))
        if locked:  # a lock file pins these aliases, wherever W&B has moved them since
            vers = CollectionVersions(vers.versions, {**vers.aliases, **{a: i for a, i in locked.items()
                                                                           if i in vers.versions}})
        return vers

    async def resolve(self, org: str, registry: str, collection: str, token: str) -> int:
        """An alias or ``vN`` to a version index, from the (alias-TTL) listing."""
        vers = await self.versions(org, registry, collection, want=token)
        idx = version_index(token)
        if idx is not None:
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
        return await self._flight.run(("ver",) + key, load, self.lookup_timeout, f"{collection}:v{index}")

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
