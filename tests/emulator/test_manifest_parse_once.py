"""A version's manifest is parsed once, not once per page of its files (issue #15 item 6).

A 100,000-entry version is listed through the real SDK (``Artifact.files()``, 5,000 a page,
and by name) and the store's parse counter proves every page reused one parse; no timing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Iterator

import pytest
import wandb

from wandbfs.emulator.seed import manifest_digest

N = 100_000


@pytest.fixture(scope="module")
def big_version(emulator) -> Iterator[str]:
    """acme/wandb-registry-parse-once/huge:v0 with N entries (digests only: listing needs no
    bytes), in a registry and project of its own, unlinked afterwards so that no other test's
    listing meets it."""
    store = emulator.store
    store.create_registry("acme", "parse-once")
    contents = {f"shard-{i // 1000:03d}/item-{i:06d}.bin": {
        "digest": base64.b64encode(hashlib.md5(str(i).encode()).digest()).decode(), "size": i % 997}
        for i in range(N)}
    art = store.create_artifact(entity="alice", project="parse-once", collection="huge-100k",
                                type_name="dataset", digest=manifest_digest(contents))
    manifest = {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents}
    store.set_manifest(art.id, json.dumps(manifest).encode())
    store.commit_artifact(art.id)
    m = store.link(art.id, store.orgs["acme"].entity, "wandb-registry-parse-once", "huge", [])
    yield "acme/wandb-registry-parse-once/huge:v0"
    store.unlink(m.collection_id, art.id)


@pytest.mark.timeout(600)
def test_pages_of_a_huge_version_parse_its_manifest_once(emu, big_version):
    store = emu.store
    before = store.manifest_parses
    art = wandb.Api().artifact(big_version)
    assert art.file_count == N
    names = [f.name for f in art.files(per_page=5000)]
    assert len(names) == N
    pages = [e for e in emu.log.entries("graphql") if e.operation and "Files" in e.operation]
    assert len(pages) >= N // 5000
    picked = [(f.name, f.size) for f in art.files(names=["shard-000/item-000007.bin", "shard-099/item-099999.bin"])]
    assert sorted(picked) == [("item-000007.bin", 7), ("item-099999.bin", 99_999 % 997)]
    # One parse at most (at commit the cache is filled; an evicted entry costs exactly one more).
    assert store.manifest_parses - before <= 1, store.manifest_parses - before
