"""The real wandb SDK, unmodified, publishes into and reads from the emulator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wandb
from wandb.errors import CommError

from tests.helpers import files_digest, publish_with_sdk, tree_digest

V0 = {"model.bin": os.urandom(70_000), "sub/config.json": b'{"lr": 0.1}\n', "sub/deep/notes.txt": b"v0\n"}
V1 = {"model.bin": os.urandom(80_000), "sub/config.json": b'{"lr": 0.2}\n', "sub/deep/notes.txt": b"v1\n",
      "extra.txt": b"only in v1\n"}


@pytest.fixture(scope="module")
def published(emulator, tmp_path_factory) -> str:
    """Two versions of acme/wandb-registry-model/sdk-resnet, v0 = production."""
    tmp = tmp_path_factory.mktemp("publish")
    publish_with_sdk(tmp, "sdk-resnet", V0, aliases=["production"])
    publish_with_sdk(tmp, "sdk-resnet", V1, aliases=["staging"])
    wandb.teardown()
    return "acme/wandb-registry-model/sdk-resnet"


@pytest.mark.parametrize("alias,expected", [("production", V0), ("v0", V0), ("v1", V1), ("latest", V1),
                                            ("staging", V1)])
def test_download_is_byte_identical(emu, published, fresh_cache, tmp_path, alias, expected):
    art = wandb.Api().artifact(f"{published}:{alias}")
    root = Path(art.download(str(tmp_path / "dl")))
    assert tree_digest(root) == files_digest(expected)
    blob_gets = [e for e in emu.log.entries("blob") if e.method == "GET"]
    assert len(blob_gets) == len(expected)  # one signed-URL GET per file, nothing more


def test_versions_and_aliases_as_the_sdk_sees_them(emu, published):
    api = wandb.Api()
    v0 = api.artifact(f"{published}:production")
    v1 = api.artifact(f"{published}:latest")
    assert (v0.version, v1.version) == ("v0", "v1")
    assert set(v0.aliases) == {"production"}
    assert set(v1.aliases) == {"latest", "staging"}
    assert v0.source_qualified_name.startswith("alice/training/sdk-resnet-train:")
    assert v0.entity == "acme-org" and v0.project == "wandb-registry-model"


def test_files_and_get_entry(emu, published, fresh_cache, tmp_path):
    art = wandb.Api().artifact(f"{published}:v1")
    names = sorted(f.name for f in art.files())
    assert names == sorted(p.rsplit("/", 1)[-1] for p in V1)
    got = art.get_entry("sub/deep/notes.txt").download(str(tmp_path / "entry"))
    assert Path(got).read_bytes() == V1["sub/deep/notes.txt"]


def test_registry_listing(emu, published):
    api = wandb.Api()
    names = {r.name for r in api.registries(organization="acme")}
    assert {"model", "dataset", "Fine-tuned Models"} <= names
    reg = api.registry("model", "acme")
    colls = {c.name for c in reg.collections()}
    assert {"sdk-resnet", "resnet50", "bert-base"} <= colls
    versions = [v for v in reg.versions() if v.collection.name == "sdk-resnet"]
    assert sorted(v.version for v in versions) == ["v0", "v1"]
    coll = api.artifact_collection("model", published)
    assert sorted(a.version for a in coll.artifacts()) == ["v0", "v1"]
    assert {"production", "staging", "latest"} <= set(coll.aliases)


def test_alias_moved_with_the_sdk(emu, tmp_path):
    publish_with_sdk(tmp_path, "movable", {"w.bin": b"first"}, aliases=["production"])
    publish_with_sdk(tmp_path, "movable", {"w.bin": b"second"})
    wandb.teardown()
    api = wandb.Api()
    name = "acme/wandb-registry-model/movable"
    assert api.artifact(f"{name}:production").version == "v0"
    v1 = api.artifact(f"{name}:v1")
    v1.aliases.append("production")
    v1.save()
    moved = wandb.Api().artifact(f"{name}:production")
    assert moved.version == "v1"
    assert "production" not in wandb.Api().artifact(f"{name}:v0").aliases


def test_link_with_artifact_link_and_create_registry(emu, tmp_path, wandb_teardown):
    api = wandb.Api()
    api.create_registry("sdk-made", visibility="organization", organization="acme",
                        description="made by the SDK")
    assert "sdk-made" in {r.name for r in wandb.Api().registries(organization="acme")}
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"linked with Artifact.link")
    run = wandb.init(entity="alice", project="training")
    art = wandb.Artifact("linked", type="dataset")
    art.add_dir(str(src))
    run.log_artifact(art)
    art.wait()
    art.link("acme/wandb-registry-sdk-made/linked-coll", aliases=["production"])
    run.finish()
    got = wandb.Api().artifact("acme/wandb-registry-sdk-made/linked-coll:production")
    assert got.version == "v0" and set(got.aliases) == {"latest", "production"}


def test_use_artifact_lineage(emu, published, wandb_teardown):
    run = wandb.init(entity="alice", project="fs-consumer", job_type="eval")
    run.use_artifact(f"{published}:production")
    run_path = f"alice/fs-consumer/{run.id}"
    run.finish()
    api = wandb.Api()
    used = api.run(run_path).used_artifacts()
    assert [a.source_qualified_name.split(":")[0] for a in used] == ["alice/training/sdk-resnet-train"]
    assert api.run(run_path).state == "finished"
    uses = [u for u in emu.uses() if u["run"] == run_path]
    assert len(uses) == 1 and uses[0]["artifact_entity"] == "acme-org"


def test_unknown_names_raise_the_sdks_not_found(emu, published):
    api = wandb.Api()
    for name in [f"{published}:v99", f"{published}:no-such-alias", "acme/wandb-registry-model/nope:latest",
                 "acme/wandb-registry-nope/x:latest"]:
        with pytest.raises((CommError, ValueError)):
            api.artifact(name)


def test_demo_data_through_the_sdk(emu):
    api = wandb.Api()
    big = api.artifact("acme/wandb-registry-model/resnet50:v3")
    entry = big.manifest.entries["model.safetensors"]
    assert entry.size == 64 * 1024 * 1024
    assert {"production", "staging", "latest"} <= {
        a for v in ["v1", "v2", "v3"] for a in api.artifact(f"acme/wandb-registry-model/resnet50:{v}").aliases}
    many = api.artifact("acme/wandb-registry-dataset/imagenet-mini:latest")
    assert len(many.manifest.entries) == 1000
    ft = api.artifact("acme/wandb-registry-Fine-tuned Models/llama-ft:production")
    assert "adapter/adapter_config.json" in ft.manifest.entries
