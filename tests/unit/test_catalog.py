"""Catalog caching rules with a fake client: TTLs, immutability, single flight."""

from __future__ import annotations

import threading

import pytest
import trio

from wandbfs.catalog.catalog import Catalog
from wandbfs.model.manifest import parse_manifest
from wandbfs.sdk.client import (CollectionInfo, CollectionVersions, NotFound, RegistryInfo,
                                VersionDetail, VersionsPage, VersionSummary)


class FakeClient:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.aliases = {"production": 0, "latest": 1}
        self.n_versions = 2
        self.page = 100        # versions on the first page (versions_head)
        self.gate = threading.Event()
        self.gate.set()

    def _count(self, name: str) -> None:
        self.gate.wait(5)
        self.calls[name] = self.calls.get(name, 0) + 1

    def viewer_orgs(self):
        self._count("orgs")
        return ["acme"]

    def viewer_entities(self):
        self._count("entities")
        return []

    def registries(self, org):
        self._count("registries")
        return [RegistryInfo("model", 0.0)]

    def collections(self, org, reg):
        self._count("collections")
        return [CollectionInfo("resnet", "model", 0.0)]

    def _listing(self):
        vs = {i: VersionSummary(i, tuple(a for a, j in self.aliases.items() if j == i), 0.0, f"id{i}")
              for i in range(self.n_versions)}
        return CollectionVersions(vs, {a: i for a, i in self.aliases.items() if i in vs})

    def versions(self, org, reg, coll):
        self._count("versions")
        if coll != "resnet":
            return CollectionVersions({}, {})
        return self._listing()

    def versions_head(self, org, reg, coll):
        self._count("head")
        if coll != "resnet":
            return VersionsPage(CollectionVersions({}, {}), True, None)
        full = self._listing()
        first = {i: v for i, v in full.versions.items() if i < self.page}
        return VersionsPage(CollectionVersions(first, {a: i for a, i in full.aliases.items() if i in first}),
                            len(first) == len(full.versions), "model")

    def find_version(self, org, reg, coll, token):
        self._count("find")
        full = self._listing()
        idx = full.aliases.get(token, int(token[1:]) if token[1:].isdigit() else None)
        if coll != "resnet" or idx not in full.versions:
            raise NotFound(token)
        return full.versions[idx]

    def prepare(self, org):
        self._count("prepare")

    def version(self, org, reg, coll, token):
        self._count("version")
        raw = {"version": 1, "contents": {}}
        return VersionDetail(org, reg, coll, int(token[1:]), f"id{token}", "acme-org", "wandb-registry-model",
                             0.0, (), parse_manifest(raw), {}, raw_manifest=raw)

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
        assert client.calls == {"head": 1}   # the first page is the whole listing: one request
        client.aliases["production"] = 1
        assert await cat.resolve("acme", "model", "resnet", "production") == 0  # still cached
        await trio.sleep(0.25)
        assert await cat.resolve("acme", "model", "resnet", "production") == 1  # after the alias TTL
        with pytest.raises(NotFound):
            await cat.collections("acme", "nope")
        with pytest.raises(NotFound):
            await cat.registries("other-org")
        await cat.collections("acme", "model")
        cat.invalidate()
        await cat.collections("acme", "model")
        assert client.calls["collections"] == 2 and client.calls["registries"] == 2
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
            assert await cat.refresh(("acme", "model")) >= 1
            assert await cat.resolve("acme", "model", "resnet", "production") == 1   # reloaded now
            client.gate.clear()
            client.aliases["production"] = 0
            with trio.fail_after(1):
                await cat.refresh()                   # gives up after the lookup timeout
                assert await cat.resolve("acme", "model", "resnet", "production") == 1   # stale kept
            client.gate.set()
            n.cancel_scope.cancel()
    trio.run(main)


def test_a_lookup_asks_for_its_name_not_for_every_listing():
    """A collection costs its first page; an alias beyond it one resolution by name; the
    whole listing follows in the background, for ls."""
    client = FakeClient()
    client.n_versions, client.page = 250, 100
    client.aliases = {"production": 200, "latest": 249, "early": 3}

    async def main() -> None:
        cat = Catalog(client)
        async with trio.open_nursery() as n:
            cat.nursery = n
            client.gate.clear()                       # hold the background listing back
            calls = client.calls
            t = trio.current_time()
            client.gate.set()
            assert (await cat.collection("acme", "model", "resnet")).name == "resnet"
            assert calls == {"head": 1}
            assert (await cat.find_version("acme", "model", "resnet", "early")).index == 3   # on the page
            assert (await cat.find_version("acme", "model", "resnet", "v7")).index == 7
            assert calls.get("find") is None
            assert (await cat.find_version("acme", "model", "resnet", "production")).index == 200
            assert calls["find"] == 1 and calls["head"] == 1
            assert "registries" not in calls and "collections" not in calls   # no level was listed
            with trio.fail_after(3):                  # the whole listing, loaded in the background
                while "versions" not in calls or ("vers", "acme", "model", "resnet") in cat._flight:
                    await trio.sleep(0.01)
            assert (await cat.find_version("acme", "model", "resnet", "latest")).index == 249
            with pytest.raises(NotFound):             # the listing is complete now: a real miss
                await cat.find_version("acme", "model", "resnet", "v250")
            assert calls["find"] == 1 and calls["versions"] == 1
            assert trio.current_time() - t < 3
            n.cancel_scope.cancel()
    trio.run(main)


def test_a_missing_collection_is_enoent_and_an_unanswered_one_eio():
    from wandbfs.sdk.gate import Gate
    from wandbfs.sdk.client import Unreachable

    client = FakeClient()

    async def main() -> None:
        cat = Catalog(client, gate=Gate(call_timeout=5), lookup_timeout=0.2)
        async with trio.open_nursery() as n:
            cat.nursery = n
            with pytest.raises(NotFound):   # no versions: the registry's listing decides
                await cat.collection("acme", "model", "nope")
            assert client.calls["head"] == 1 and client.calls["collections"] == 1
            with pytest.raises(NotFound):   # the registry's fresh listing says no at once
                await cat.collection("acme", "model", "other")
            assert client.calls["head"] == 1
            cat.invalidate()
            client.gate.clear()             # W&B hangs: a never-seen name is EIO, in time
            with trio.fail_after(1), pytest.raises(Unreachable):
                await cat.collection("acme", "model", "other")
            client.gate.set()
            n.cancel_scope.cancel()
    trio.run(main)


def test_versions_known_on_disk_need_no_w_and_b(tmp_path):
    """A new mount: a vN whose manifest is on disk, and its collection, answer with no
    request even while W&B hangs; aliases come from the last known listing and are
    revalidated; a vN never seen waits (bounded) and is EIO, not ENOENT."""
    from wandbfs.catalog.metastore import MetaStore
    from wandbfs.sdk.gate import Gate
    from wandbfs.sdk.client import Unreachable

    first = FakeClient()

    async def fill() -> None:
        cat = Catalog(first, meta=MetaStore(tmp_path))
        await cat.version("acme", "model", "resnet", (await cat.find_version("acme", "model", "resnet", "v1")).index)
    trio.run(fill)

    client = FakeClient()

    async def main() -> None:
        cat = Catalog(client, meta=MetaStore(tmp_path), gate=Gate(call_timeout=5), lookup_timeout=0.3)
        async with trio.open_nursery() as n:
            cat.nursery = n
            client.gate.clear()                        # W&B hangs
            with trio.fail_after(0.2):
                assert (await cat.collection("acme", "model", "resnet")).name == "resnet"
                assert (await cat.find_version("acme", "model", "resnet", "v1")).index == 1
                assert (await cat.version("acme", "model", "resnet", 1)).index == 1
            assert client.calls == {} and not cat._flight._inflight   # nothing asked, nothing pending
            with trio.fail_after(0.2):                 # an alias: the last known listing, revalidated
                assert await cat.resolve("acme", "model", "resnet", "production") == 0
            assert ("vers", "acme", "model", "resnet") in cat._flight
            with trio.fail_after(1), pytest.raises(Unreachable):
                await cat.find_version("acme", "model", "resnet", "v5")
            client.gate.set()
            n.cancel_scope.cancel()
    trio.run(main)


def test_a_version_read_just_before_unmount_is_kept_on_disk(tmp_path):
    """The record is written in the background; an unmount (the nursery cancelled) right
    after the lookup must not lose it: the next mount may be the offline one. The cache dir
    need not exist yet (listings are saved before the first file is cached)."""
    from wandbfs.catalog.metastore import MetaStore

    meta_root = tmp_path / "cache-not-made-yet" / "wandbfs-meta"

    async def main() -> None:
        async with trio.open_nursery() as n:
            cat = Catalog(FakeClient(), meta=MetaStore(meta_root), nursery=n)
            await cat.version("acme", "model", "resnet", 1)
            n.cancel_scope.cancel()                    # the unmount, before _keep has run
    trio.run(main)
    kept = MetaStore(meta_root).load_version("acme", "model", "resnet", 1)
    assert kept is not None and kept.index == 1 and kept.artifact_id == "idv1"


def test_a_version_whose_manifest_could_not_be_written_leaves_no_record(tmp_path, caplog):
    """A record naming a manifest file that is not there would be read back as broken."""
    from wandbfs.catalog.metastore import MetaStore

    import dataclasses
    import json

    detail = FakeClient().version("acme", "model", "resnet", "v1")
    detail = dataclasses.replace(detail, raw_manifest=json.dumps(detail.raw_manifest).encode())
    meta = MetaStore(tmp_path)
    manifest = meta._version_path("acme", "model", "resnet", 1).with_suffix(".manifest")
    manifest.mkdir(parents=True)                       # replace() onto it fails (EISDIR)
    meta.save_version(detail)
    assert not manifest.with_suffix(".json").exists()
    assert meta.load_version("acme", "model", "resnet", 1) is None
    assert [r for r in caplog.records if "could not save metadata v1.manifest" in r.getMessage()]


def test_the_mount_start_loads_the_registries_before_any_lookup():
    client = FakeClient()

    async def main() -> None:
        async with trio.open_nursery() as n:
            cat = Catalog(client, nursery=n)
            with trio.fail_after(3):
                while ("regs", "acme") not in cat._lists:
                    await trio.sleep(0.01)
            assert client.calls == {"orgs": 1, "prepare": 1, "registries": 1}
            assert "model" in await cat.registries("acme", want="model")
            assert client.calls["registries"] == 1
            n.cancel_scope.cancel()
    trio.run(main)


def test_a_locked_alias_stays_on_its_version_while_that_exists():
    client = FakeClient()
    client.n_versions = 3

    async def main() -> None:
        cat = Catalog(client, locks={("acme", "model", "resnet"): {"production": 2, "latest": 7}})
        assert await cat.resolve("acme", "model", "resnet", "production") == 2   # W&B says 0
        assert await cat.resolve("acme", "model", "resnet", "latest") == 1       # v7 is gone: W&B's
        assert (await cat.versions("acme", "model", "resnet")).aliases["production"] == 2
    trio.run(main)
