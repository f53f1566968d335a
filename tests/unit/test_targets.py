"""wandbfs.cli.targets: one reading of NAME|PATH for every command.

Paths are read from a directory tree laid out like a mount (alias symlinks to vN
directories); the same functions run on real mounts in tests/ops/test_resolve.py,
tests/fs/test_prefetch.py and tests/faults/test_cache_limits.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wandbfs.cli.targets import (
    ResolveError,
    Target,
    is_collection_path,
    is_name,
    locate,
    looks_like_path,
    name_to_path,
    parse_name,
    resolve_path,
    resolve_target,
)

RESNET = "acme/wandb-registry-model/resnet50"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``<mp>/acme/model/resnet50/{v0,v3}``, ``production -> v3``, the qualified and the
    wandb-registry- spellings as the mount answers them (symlinks here)."""
    mp = tmp_path / "mnt"
    coll = mp / "acme/model/resnet50"
    for v in ("v0", "v3"):
        (coll / v / "weights").mkdir(parents=True)
        (coll / v / "weights/model.pt").write_bytes(b"w")
    (coll / "production").symlink_to("v3")
    (mp / "acme/model/resnet50:production").symlink_to("resnet50/v3")
    (mp / "acme/wandb-registry-model").symlink_to("model")
    return mp


# ---- names --------------------------------------------------------------------------------

def test_a_name_is_its_parts_and_a_bare_name_means_latest():
    assert parse_name(f"{RESNET}:production") == Target("acme", "model", "resnet50", "production")
    t = parse_name(RESNET)
    assert t.version == "latest" and t.alias == "latest" and t.token == "latest"
    v = parse_name(f"{RESNET}:v3")
    assert v.alias is None and v.requested == f"{RESNET}:v3" and v.mount_path is None
    assert parse_name(f"{RESNET}:v03").alias == "v03"        # not canonical: an alias, as for W&B
    p = parse_name("acme/model/resnet50:v1")      # no registry: a project artifact of entity acme
    assert (p.org, p.registry, p.requested) == ("@acme", "model", "acme/model/resnet50:v1")
    for bad in ["acme/resnet50:v1", "acme/wandb-registry-model", f"{RESNET}:"]:
        assert not is_name(bad)
        with pytest.raises(ResolveError):
            parse_name(bad)


def test_resolve_error_is_a_value_error():
    # prefetch's and pin's callers catch ValueError, resolve's ResolveError: one error for both
    assert issubclass(ResolveError, ValueError)


def test_locate_picks_the_deepest_mount():
    mounts = ["/mnt/wandb", "/mnt/wandb/acme/nested", "/srv"]
    assert locate("/mnt/wandb/acme/model/r/v1/f", mounts) == ("/mnt/wandb", ("acme", "model", "r", "v1", "f"))
    assert locate("/mnt/wandb/acme/nested/x", mounts) == ("/mnt/wandb/acme/nested", ("x",))
    assert locate("/mnt/wandbfoo/x", mounts) is None
    assert locate("/mnt/wandb", mounts) == ("/mnt/wandb", ())


def test_name_to_path():
    assert name_to_path(f"{RESNET}:production", "/mnt/wandb") == "/mnt/wandb/acme/model/resnet50/production"
    assert name_to_path(RESNET, "/mnt/wandb") == "/mnt/wandb/acme/model/resnet50/latest"
    assert (name_to_path("acme/wandb-registry-Fine-tuned Models/llama-ft:v2", "/m", "adapter/a.json")
            == "/m/acme/Fine-tuned Models/llama-ft/v2/adapter/a.json")
    assert name_to_path("alice/train/ckpt:best", "/m") == "/m/@alice/train/ckpt:best"   # a project artifact
    for bad in ["acme/resnet50:v1", "acme/wandb-registry-model", f"{RESNET}:", "a/wandb-registry-/c:v1"]:
        with pytest.raises(ResolveError):
            name_to_path(bad, "/mnt/wandb")
    with pytest.raises(ResolveError, match="not allowed"):
        name_to_path(f"{RESNET}:v1", "/mnt/wandb", "../../etc/passwd")


# ---- paths --------------------------------------------------------------------------------

def test_an_alias_path_keeps_the_alias_and_names_the_mounts_vN(tree: Path):
    t = resolve_path(str(tree / "acme/model/resnet50/production/weights/model.pt"), [str(tree)])
    assert (t.org, t.registry, t.collection, t.version, t.inner) == (
        "acme", "model", "resnet50", "production", ("weights", "model.pt"))
    assert t.alias == "production" and t.mount_index == 3 and t.token == "v3"
    assert t.mount_path == str(tree / "acme/model/resnet50/production/weights/model.pt")
    assert t.requested == f"{RESNET}:production"
    v0 = resolve_path(str(tree / "acme/model/resnet50/v0"), [str(tree)])
    assert v0.alias is None and v0.token == "v0" and v0.inner == ()


def test_the_unlisted_spellings_read_the_same(tree: Path):
    plain = resolve_path(str(tree / "acme/model/resnet50/production/weights"), [str(tree)])
    for p in ["acme/model/resnet50:production/weights", "acme/wandb-registry-model/resnet50/production/weights"]:
        t = resolve_path(str(tree / p), [str(tree)])
        assert (t.registry, t.collection, t.version, t.inner, t.token) == (
            plain.registry, plain.collection, plain.version, plain.inner, plain.token), p


def test_a_relative_path_keeps_the_alias_of_the_shells_working_directory(tree: Path, monkeypatch):
    here = tree / "acme/model/resnet50/production"
    monkeypatch.chdir(here)                      # getcwd() is now .../v3
    monkeypatch.setenv("PWD", str(here))         # the shell's logical directory
    t = resolve_target("weights", [str(tree)])
    assert t.version == "production" and t.token == "v3" and t.inner == ("weights",)
    monkeypatch.setenv("PWD", "/elsewhere")      # a stale $PWD is not believed
    assert resolve_target("./weights", [str(tree)]).version == "v3"


def test_a_mount_reached_through_a_symlink(tree: Path, tmp_path: Path):
    (tmp_path / "link").symlink_to(tree)
    t = resolve_path(str(tmp_path / "link/acme/model/resnet50/production"), [str(tree)])
    assert t.token == "v3" and t.version == "production"


@pytest.mark.parametrize(("rel", "words"), [
    ("acme/model/resnet50", "not a version directory"),
    ("acme/model", "not a version directory"),
    ("acme/model/resnet50/no-such-alias", "no such version"),
    ("acme/model/resnet50/production/nope.bin", "no such file"),
])
def test_paths_that_name_no_version(tree: Path, rel: str, words: str):
    with pytest.raises(ResolveError, match=words):
        resolve_path(str(tree / rel), [str(tree)])


def test_outside_every_mount(tree: Path, tmp_path: Path):
    with pytest.raises(ResolveError, match="not inside a wandbfs mount"):
        resolve_target(str(tmp_path), [str(tree)])
    with pytest.raises(ResolveError, match="not inside a wandbfs mount"):
        resolve_target(str(tree / "acme/model/resnet50/v0"), [])


def test_collection_folders(tree: Path):
    assert is_collection_path(str(tree / "acme/model/resnet50"), [str(tree)])
    assert not is_collection_path(str(tree / "acme/model/resnet50/production"), [str(tree)])
    assert not is_collection_path(str(tree / "acme/model"), [str(tree)])
    assert not is_collection_path(str(tree / "acme/model/resnet50"), [])


# ---- NAME|PATH ----------------------------------------------------------------------------

def test_name_or_path(tree: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PWD", raising=False)
    assert resolve_target(f"{RESNET}:production", [str(tree)]) == parse_name(f"{RESNET}:production")
    assert resolve_target(str(tree / "acme/model/resnet50/production"), [str(tree)]).mount_index == 3
    # a name is a name even when it could be a relative path; a typo'd name is neither
    assert not looks_like_path(f"{RESNET}:v1") and looks_like_path("./x") and looks_like_path("/x")
    with pytest.raises(ResolveError, match="neither a path in a wandbfs mount nor a registry name"):
        resolve_target("acme/resnet50:v1", [str(tree)])
    # an existing relative path is a path, even one spelled like a name
    (tmp_path / "acme/wandb-registry-model").mkdir(parents=True)
    (tmp_path / "acme/wandb-registry-model/resnet50").mkdir()
    assert looks_like_path(RESNET) and os.path.isdir(RESNET)
    with pytest.raises(ResolveError, match="not inside a wandbfs mount"):
        resolve_target(RESNET, [str(tree)])
