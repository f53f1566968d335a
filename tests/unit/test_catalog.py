"""Catalog caching rules with a fake client: TTLs, immutability, single flight."""

from __future__ import annotations

import threading

import pytest
import trio

from wandbfs.catalog import Catalog
from wandbfs.manifest import parse_manifest
from wandbfs.wandb_client import (CollectionInfo, CollectionVersions, NotFound, RegistryInfo,
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
