"""Deletions, renames, tags and vN aliases, with the real SDK as the client.

Every test publishes into its own uniquely named collections (``seed.publish`` straight into
the store, which the SDK-publish tests elsewhere prove equivalent) and then changes them with
the SDK's own calls: ``artifact.delete()``, ``collection.save()/delete()``,
``registry.save()/delete()``. The demo collections other tests read are never touched.
"""

from __future__ import annotations

import uuid

import pytest
import wandb
from wandb.errors import CommError

from wandbfs.emulator.seed import SOURCE_ENTITY, SOURCE_PROJECT, publish
from wandbfs.emulator.store import Store

REG = "acme/wandb-registry-model"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _publish(emu, coll: str, n: int, aliases: dict[int, list[str]] | None = None,
             registry: str = "model", start: int = 0) -> None:
    """``n`` versions of ``coll`` (source ``<coll>-source``), each linked into ``registry``;
    version ``i``'s contents are ``<coll> <start + i>`` (the same contents dedup to one version)."""
    for i in range(n):
        publish(emu.store, "acme", registry, coll, {"w.txt": f"{coll} {start + i}".encode()},
                (aliases or {}).get(i, []))


def _source(coll: str) -> str:
    return f"{SOURCE_ENTITY}/{SOURCE_PROJECT}/{coll}-source"


def _versions(coll) -> list[str]:
    return sorted((a.version for a in coll.artifacts()), key=lambda v: int(v[1:]))


def _not_found(api: wandb.Api, name: str) -> None:
    with pytest.raises((CommError, ValueError)):
        api.artifact(name)


def test_delete_refuses_a_version_with_aliases_until_told(emu):
    coll = _name("del-aliased")
    _publish(emu, coll, 2, {0: ["production"]})
    api = wandb.Api()
    src = api.artifact(f"{_source(coll)}:v0")      # a source version: delete() sends DeleteArtifact
    assert not src.is_link
    with pytest.raises(CommError, match="aliases"):
        src.delete()
    assert api.artifact(f"{REG}/{coll}:production").source_version == "v0"   # nothing happened
    src.delete(delete_aliases=True)
    _not_found(api, f"{_source(coll)}:v0")
    _not_found(api, f"{REG}/{coll}:v0")            # the registry link went with the source
    _not_found(api, f"{REG}/{coll}:production")    # and its aliases are free
    assert emu.store.artifacts[src.id].state == "DELETED"
    assert Store(emu.store.state_dir).artifacts[src.id].state == "DELETED"   # persisted


def test_deleted_versions_leave_gaps_and_latest_stays_on_the_newest(emu):
    coll = _name("gaps")
    _publish(emu, coll, 3)
    api = wandb.Api()
    api.artifact(f"{_source(coll)}:v1").delete()   # no aliases: W&B deletes it as asked
    source = api.artifact_collection("model", _source(coll))
    linked = api.artifact_collection("model", f"{REG}/{coll}")
    assert _versions(source) == ["v0", "v2"] and _versions(linked) == ["v0", "v2"]
    assert [v.version for v in api.registry("model", "acme").versions() if v.collection.name == coll] \
        in (["v0", "v2"], ["v2", "v0"])
    api.artifact(f"{_source(coll)}:latest").delete(delete_aliases=True)   # v2, the latest
    assert api.artifact(f"{_source(coll)}:latest").version == "v0"
    assert api.artifact(f"{REG}/{coll}:latest").version == "v0"
    _publish(emu, coll, 1, start=3)                 # numbers are never reused
    assert _versions(api.artifact_collection("model", _source(coll))) == ["v0", "v3"]
    assert _versions(api.artifact_collection("model", f"{REG}/{coll}")) == ["v0", "v3"]


def test_deleting_a_linked_version_only_unlinks_it(emu):
    coll = _name("unlink")
    _publish(emu, coll, 2)
    api = wandb.Api()
    api.artifact(f"{REG}/{coll}:v1").delete()       # a link: the SDK unlinks it
    assert _versions(api.artifact_collection("model", f"{REG}/{coll}")) == ["v0"]
    assert api.artifact(f"{REG}/{coll}:latest").version == "v0"
    assert api.artifact(f"{_source(coll)}:v1").state == "COMMITTED"


def test_delete_a_registry_collection_keeps_the_sources(emu):
    coll = _name("del-portfolio")
    _publish(emu, coll, 2, {1: ["staging"]})
    api = wandb.Api()
    api.artifact_collection("model", f"{REG}/{coll}").delete()
    with pytest.raises((CommError, ValueError)):
        api.artifact_collection("model", f"{REG}/{coll}")
    _not_found(api, f"{REG}/{coll}:v0")
    assert coll not in {c.name for c in api.registry("model", "acme").collections()}
    assert _versions(api.artifact_collection("model", _source(coll))) == ["v0", "v1"]


def test_delete_a_source_collection_deletes_its_versions_and_links(emu):
    coll = _name("del-sequence")
    _publish(emu, coll, 2, {0: ["production"]})
    api = wandb.Api()
    ids = [api.artifact(f"{_source(coll)}:v{i}").id for i in range(2)]
    api.artifact_collection("model", _source(coll)).delete()
    with pytest.raises((CommError, ValueError)):
        api.artifact_collection("model", _source(coll))
    _not_found(api, f"{_source(coll)}:latest")
    assert _versions(api.artifact_collection("model", f"{REG}/{coll}")) == []
    assert all(emu.store.artifacts[i].state == "DELETED" for i in ids)
    reloaded = Store(emu.store.state_dir)                 # persisted, the collection as a tombstone
    assert all(reloaded.artifacts[i].state == "DELETED" for i in ids)
    assert reloaded.collection(SOURCE_ENTITY, SOURCE_PROJECT, f"{coll}-source") is None
    assert reloaded.collection_by_id(reloaded.artifacts[ids[0]].seq_id).state == "DELETED"


def test_rename_describe_and_tag_a_collection(emu):
    coll, new = _name("rename"), _name("renamed")
    _publish(emu, coll, 2, {0: ["production"]})
    api = wandb.Api()
    c = api.artifact_collection("model", f"{REG}/{coll}")
    c.name, c.description, c.tags = new, "fine-tuned on squad", ["nlp", "prod-ready"]
    c.save()
    with pytest.raises((CommError, ValueError)):
        api.artifact_collection("model", f"{REG}/{coll}")   # found by its new name only
    _not_found(api, f"{REG}/{coll}:v0")
    got = api.artifact_collection("model", f"{REG}/{new}")
    assert (got.name, got.description, sorted(got.tags)) == (new, "fine-tuned on squad", ["nlp", "prod-ready"])
    assert api.artifact(f"{REG}/{new}:production").version == "v0"
    got.tags = ["nlp"]
    got.save()
    assert api.artifact_collection("model", f"{REG}/{new}").tags == ["nlp"]
    assert Store(emu.store.state_dir).collections[got.id].name == new   # persisted


def test_renaming_onto_an_existing_collection_is_refused(emu):
    a, b = _name("taken-a"), _name("taken-b")
    _publish(emu, a, 1)
    _publish(emu, b, 1)
    c = wandb.Api().artifact_collection("model", f"{REG}/{a}")
    c.name = b
    with pytest.raises(CommError, match="already exists"):
        c.save()


def test_change_a_source_collection_type(emu):
    coll = _name("retype")
    art, link = publish(emu.store, "acme", "model", coll, {"w.txt": coll.encode()})
    api = wandb.Api()
    c = api.artifact_collection("model", _source(coll))
    c.type = "checkpoint"
    with pytest.raises(CommError, match="linked into"):   # the registry collection holds models
        c.save()
    emu.store.unlink(link.collection_id, art.id)
    c = api.artifact_collection("model", _source(coll))
    c.type = "checkpoint"
    c.save()
    assert api.artifact_collection("checkpoint", _source(coll)).type == "checkpoint"
    assert api.artifact(f"{_source(coll)}:v0").type == "checkpoint"


def test_rename_describe_and_delete_a_registry(emu):
    old, new = _name("reg"), _name("reg-renamed")
    api = wandb.Api()
    api.create_registry(old, visibility="organization", organization="acme")
    coll = _name("in-reg")
    _publish(emu, coll, 1, registry=old)
    reg = api.registry(old, "acme")
    reg.name, reg.description = new, "renamed by the SDK"
    reg.save()
    with pytest.raises(ValueError):
        api.registry(old, "acme")
    got = api.registry(new, "acme")
    assert got.description == "renamed by the SDK"
    assert [c.name for c in got.collections()] == [coll]
    assert api.artifact(f"acme/wandb-registry-{new}/{coll}:v0").source_version == "v0"
    got.delete()
    with pytest.raises(ValueError):
        api.registry(new, "acme")
    assert new not in {r.name for r in api.registries(organization="acme")}
    _not_found(api, f"acme/wandb-registry-{new}/{coll}:v0")
    assert api.artifact(f"{_source(coll)}:v0").state == "COMMITTED"   # the source stays


def test_a_version_linked_into_a_new_collection_reports_that_collections_vN(emu):
    resnet, bert, target = _name("vn-resnet"), _name("vn-bert"), _name("vtest")
    _publish(emu, resnet, 4)
    _publish(emu, bert, 2)
    api = wandb.Api()
    api.artifact(f"{_source(resnet)}:v3").link(f"{REG}/{target}")
    api.artifact(f"{_source(bert)}:v1").link(f"{REG}/{target}", aliases=["candidate"])
    listed = sorted((a.version, a.source_version) for a in
                    api.artifact_collection("model", f"{REG}/{target}").artifacts())
    assert listed == [("v0", "v3"), ("v1", "v1")]
    first = api.artifact(f"{REG}/{target}:v0")
    assert (first.version, first.source_version, first.aliases) == ("v0", "v3", [])
    latest = api.artifact(f"{REG}/{target}:latest")
    assert latest.version == "v1" and set(latest.aliases) == {"latest", "candidate"}
    in_registry = sorted(v.version for v in api.registry("model", "acme").versions()
                         if v.collection.name == target)
    assert in_registry == ["v0", "v1"]
    assert api.artifact(f"{_source(resnet)}:v3").version == "v3"   # the source keeps its own


def test_aliases_that_differ_only_in_case_are_refused(emu):
    coll = _name("case")
    _publish(emu, coll, 2, {0: ["production"]})
    api = wandb.Api()
    v1 = api.artifact(f"{REG}/{coll}:v1")
    v1.aliases.append("Production")
    with pytest.raises(CommError, match="differs only in case"):
        v1.save()
    v1 = api.artifact(f"{REG}/{coll}:v1")
    assert set(v1.aliases) == {"latest"}
    v1.aliases.append("production")                # the same alias moves, as on W&B
    v1.save()
    assert api.artifact(f"{REG}/{coll}:production").version == "v1"


def test_an_unimplemented_mutation_is_an_error_naming_it(emu):
    api = wandb.Api()
    with pytest.raises(Exception, match="mutation frobnicateArtifact is not implemented by the emulator"):
        api._service_api.execute_graphql("mutation M { frobnicateArtifact(input: {id: \"x\"}) { success } }")
