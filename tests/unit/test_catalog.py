"""Catalog caching rules with a fake client: TTLs, immutability, single flight."""

from __future__ import annotations

import threading

import pytest
import trio

from wandbfs.catalog.catalog import Catalog
from wandbfs.model.manifest import parse_manifest
from wandbfs.sdk.client import (CollectionInfo, CollectionVersions, NotFound, RegistryInfo,
                                  VersionDetail, VersionSummary)


class FakeClient:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.aliases = {"production": 0, "latest": 1}
        self.gate = threading.Event()
        self.gate.set()

    def _count(self, name: str) -> None:
        self.gate.wait(5)
        self.calls[name] = self.calls.get(name, 0) + 1

    def viewer_orgs(self):
        self._count("orgs")
        return ["acme"]

    def registries(self, org):
        self._count("registries")
        return [RegistryInfo("model", 0.0)]

    def collections(self, org, reg):
        self._count("collections")
        return [CollectionInfo("resnet", "model", 0.0)]

    def versions(self, org, reg, coll, type_name):
        self._count("versions")
        vs = {i: VersionSummary(i, (), 0.0, f"id{i}") for i in (0, 1)}
        return CollectionVersions(vs, dict(self.aliases))

    def version(self, org, reg, coll, token):
        self._count("version")
        return VersionDetail(org, reg, coll, int(token[1:]), f"id{token}", "acme-org", "wandb-registry-model",
                             0.0, (), parse_manifest({"version": 1, "contents": {}}), {})

    def file_urls(self, detail):
        self._count("urls")
        return {"a.txt": f"http://x/{self.calls['urls']}"}


def test_listing_and_alias_caching():
    client = FakeClient()

    async def main() -> None:
        cat = Catalog(client, alias_ttl=0.2, list_ttl=60)
        assert await cat.resolve("acme", "model", "resnet", "production") == 0
        assert await cat.resolve("acme", "model", "resnet", "v1") == 1
        for token in ("v2", "v01", "nope"):
            with pytest.raises(NotFound):
                await cat.resolve("acme", "model", "resnet", token)
        assert client.calls["versions"] == 1
        client.aliases["production"] = 1
        assert await cat.resolve("acme", "model", "resnet", "production") == 0  # still cached
        await trio.sleep(0.25)
        assert await cat.resolve("acme", "model", "resnet", "production") == 1  # after the alias TTL
        assert client.calls["collections"] == 1 and client.calls["registries"] == 1
        with pytest.raises(NotFound):
            await cat.collections("acme", "nope")
        with pytest.raises(NotFound):
            await cat.registries("other-org")
        cat.invalidate()
        await cat.collections("acme", "model")
        assert client.calls["collections"] == 2
    trio.run(main)


def test_versions_are_loaded_once_and_concurrent_callers_share_one_call():
    client = FakeClient()

    async def main() -> None:
        cat = Catalog(client)
        client.gate.clear()
        results = []

        async def get() -> None:
            results.append(await cat.version("acme", "model", "resnet", 1))
        async with trio.open_nursery() as n:
            for _ in range(10):
                n.start_soon(get)
            await trio.sleep(0.05)
            client.gate.set()
        assert client.calls["version"] == 1 and len({id(r) for r in results}) == 1
        await cat.version("acme", "model", "resnet", 1)
        cat.invalidate()
        await cat.version("acme", "model", "resnet", 1)
        assert client.calls["version"] == 1  # immutable: never refetched
        d = results[0]
        u1 = await cat.file_url(d, "a.txt")
        assert await cat.file_url(d, "a.txt") == u1
        assert await cat.file_url(d, "a.txt", refresh=True) != u1
        with pytest.raises(NotFound):
            await cat.file_url(d, "missing.txt")
    trio.run(main)


def test_expired_listings_are_served_at_once_and_refreshed_in_the_background():
    """Stale-while-revalidate: W&B hanging never holds up a name seen before."""
    from wandbfs.sdk.gate import Gate
    from wandbfs.sdk.client import Unreachable

    client = FakeClient()

    async def main() -> None:
        cat = Catalog(client, alias_ttl=0.05, list_ttl=0.05, gate=Gate(call_timeout=2), lookup_timeout=0.3)
        async with trio.open_nursery() as n:
            cat.nursery = n
            assert await cat.resolve("acme", "model", "resnet", "production") == 0
            await trio.sleep(0.1)                      # every listing expired
            client.gate.clear()                        # W&B hangs
            client.aliases["production"] = 1
            with trio.fail_after(0.1):                 # served from the stale copies, no waiting
                assert await cat.resolve("acme", "model", "resnet", "production") == 0
                assert await cat.resolve("acme", "model", "resnet", "production") == 0
            # one refresh per key at a time, however often it is asked
            assert sum(1 for k in cat._flight._inflight if k[0] == "vers") == 1
            # a name the stale listing lacks waits for W&B, bounded, then EIO (not ENOENT)
            t0 = trio.current_time()
            with pytest.raises(Unreachable):
                await cat.resolve("acme", "model", "resnet", "brand-new")
            assert trio.current_time() - t0 < 0.6
            client.gate.set()                          # W&B answers: the refresh lands
            with trio.fail_after(3):
                while await cat.resolve("acme", "model", "resnet", "production") != 1:
                    await trio.sleep(0.02)
            with pytest.raises(NotFound):              # now W&B answered: a real miss
                await cat.resolve("acme", "model", "resnet", "brand-new")
            n.cancel_scope.cancel()
    trio.run(main)


def test_a_never_seen_version_waits_only_the_lookup_timeout_and_the_load_goes_on():
    from wandbfs.sdk.gate import Gate
    from wandbfs.sdk.client import Unreachable

    client = FakeClient()

    async def main() -> None:
        cat = Catalog(client, gate=Gate(call_timeout=5), lookup_timeout=0.2)
        async with trio.open_nursery() as n:
            cat.nursery = n
            client.gate.clear()
            with pytest.raises(Unreachable):
                await cat.version("acme", "model", "resnet", 1)
            client.gate.set()
            with trio.fail_after(3):                   # the same load finished in the background
                d = await cat.version("acme", "model", "resnet", 1)
            assert d.index == 1 and client.calls["version"] == 1
            n.cancel_scope.cancel()
    trio.run(main)


def test_refresh_reloads_now_and_keeps_the_stale_copy_when_w_and_b_hangs():
    from wandbfs.sdk.gate import Gate

    client = FakeClient()

    async def main() -> None:
        cat = Catalog(client, alias_ttl=60, list_ttl=60, gate=Gate(call_timeout=2), lookup_timeout=0.2)
        async with trio.open_nursery() as n:
            cat.nursery = n
            assert await cat.resolve("acme", "model", "resnet", "production") == 0
            client.aliases["production"] = 1
            assert await cat.refresh(("acme", "model")) >= 2
            assert await cat.resolve("acme", "model", "resnet", "production") == 1   # reloaded now
            client.gate.clear()
            client.aliases["production"] = 0
            with trio.fail_after(1):
                await cat.refresh()                   # gives up after the lookup timeout
                assert await cat.resolve("acme", "model", "resnet", "production") == 1   # stale kept
            client.gate.set()
            n.cancel_scope.cancel()
    trio.run(main)
