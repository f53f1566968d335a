"""Unit tests for wandbfs.model.names (registry naming and mount-path parsing)."""

from __future__ import annotations

import dataclasses

import pytest

from wandbfs.model.names import (
    DEFAULT_VERSION,
    REGISTRY_PREFIX,
    Level,
    ParsedPath,
    QualifiedName,
    VersionRef,
    is_safe_name,
    parse_mount_path,
    parse_qualified_name,
    parse_version_token,
    qualified_name,
    registry_display,
    registry_project,
    split_qualified,
    version_index,
)

# --- registry_project / registry_display -----------------------------------


def test_registry_prefix_value() -> None:
    assert REGISTRY_PREFIX == "wandb-registry-"


def test_registry_project_adds_prefix() -> None:
    assert registry_project("model") == "wandb-registry-model"


def test_registry_project_keeps_spaces_and_unicode() -> None:
    assert registry_project("Fine-tuned Models") == "wandb-registry-Fine-tuned Models"
    assert registry_project("模型 ü") == "wandb-registry-模型 ü"


def test_registry_project_is_not_idempotent() -> None:
    # A bijection with registry_display, even for odd display names.
    assert registry_project("wandb-registry-x") == "wandb-registry-wandb-registry-x"


def test_registry_project_rejects_empty() -> None:
    with pytest.raises(ValueError):
        registry_project("")


@pytest.mark.parametrize(
    ("project", "display"),
    [
        ("wandb-registry-model", "model"),
        ("wandb-registry-Fine-tuned Models", "Fine-tuned Models"),
        ("wandb-registry-données", "données"),
        ("wandb-registry-wandb-registry-x", "wandb-registry-x"),
        ("wandb-registry-", None),  # the bare prefix is not a registry
        ("my-project", None),
        ("", None),
        ("Wandb-Registry-model", None),  # case-sensitive
        ("xwandb-registry-model", None),
    ],
)
def test_registry_display(project: str, display: str | None) -> None:
    assert registry_display(project) == display


@pytest.mark.parametrize("name", ["model", "Fine-tuned Models", "données", "a"])
def test_registry_round_trip(name: str) -> None:
    assert registry_display(registry_project(name)) == name


# --- parse_version_token -----------------------------------------------------


@pytest.mark.parametrize(("token", "index"), [("v0", 0), ("v3", 3), ("v10", 10), ("v1234", 1234)])
def test_version_index(token: str, index: int) -> None:
    ref = parse_version_token(token)
    assert ref.kind == "index"
    assert ref.index == index
    assert ref.alias is None
    assert ref.is_index
    assert ref.token == token


@pytest.mark.parametrize(
    "token",
    ["latest", "production", "v03", "v00", "V3", "v", "v3a", "v-1", "v 3", "vv3", "v٣", "best model"],
)
def test_version_alias(token: str) -> None:
    ref = parse_version_token(token)
    assert ref.kind == "alias"
    assert ref.alias == token
    assert ref.index is None
    assert not ref.is_index
    assert ref.token == token
    assert str(ref) == token


@pytest.mark.parametrize("token", ["v0", "v3", "v10", "v1234", "latest", "v03", "v00", "V3", "v", "v3a",
                                   "v-1", "v 3", "vv3", "v٣", "v³", "best model"])
def test_version_index_agrees_with_parse_version_token(token: str) -> None:
    # The one vN rule: "v03", "v٣" (Arabic-Indic) and "v³" pass str.isdigit() but are aliases.
    assert version_index(token) == parse_version_token(token).index


@pytest.mark.parametrize("token", ["", "a:b", "coll:v3", "a/b", ":", "/"])
def test_version_index_never_raises(token: str) -> None:
    assert version_index(token) is None


@pytest.mark.parametrize("token", ["", "a:b", "a/b", ":", "/"])
def test_version_token_invalid(token: str) -> None:
    with pytest.raises(ValueError):
        parse_version_token(token)


def test_version_ref_is_frozen_and_hashable() -> None:
    ref = parse_version_token("v3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.index = 4  # type: ignore[misc]
    assert {ref, parse_version_token("v3")} == {VersionRef("index", index=3)}
    assert parse_version_token("v3") != parse_version_token("v03")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "index"},
        {"kind": "index", "index": -1},
        {"kind": "index", "index": 1, "alias": "x"},
        {"kind": "alias"},
        {"kind": "alias", "alias": ""},
        {"kind": "alias", "alias": "x", "index": 1},
        {"kind": "other", "alias": "x"},
    ],
)
def test_version_ref_rejects_inconsistent_fields(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        VersionRef(**kwargs)


# --- split_qualified ---------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("resnet:production", ("resnet", "production")),
        ("resnet:v3", ("resnet", "v3")),
        ("my model:best one", ("my model", "best one")),
        ("a:b:c", ("a", "b:c")),  # first ':' splits, like the SDK's ArtifactPath
        ("resnet", None),
        ("resnet:", None),
        (":production", None),
        (":", None),
        ("", None),
    ],
)
def test_split_qualified(segment: str, expected: tuple[str, str] | None) -> None:
    assert split_qualified(segment) == expected


# --- qualified_name / parse_qualified_name -----------------------------------


def test_qualified_name_builds_sdk_string() -> None:
    assert qualified_name("acme", "model", "resnet", "production") == (
        "acme/wandb-registry-model/resnet:production"
    )
    assert qualified_name("acme", "Fine-tuned Models", "llama", "v3") == (
        "acme/wandb-registry-Fine-tuned Models/llama:v3"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("", "model", "resnet", "v1"),
        ("acme", "", "resnet", "v1"),
        ("acme", "model", "", "v1"),
        ("acme", "model", "resnet", ""),
        ("ac/me", "model", "resnet", "v1"),
        ("acme", "mo/del", "resnet", "v1"),
        ("acme", "model", "res/net", "v1"),
        ("acme", "model", "res:net", "v1"),
        ("acme", "model", "resnet", "a:b"),
    ],
)
def test_qualified_name_rejects_ambiguous_parts(args: tuple[str, str, str, str]) -> None:
    with pytest.raises(ValueError):
        qualified_name(*args)


def test_parse_qualified_name_basic() -> None:
    q = parse_qualified_name("acme/wandb-registry-model/resnet:v3")
    assert q == ("acme", "model", "resnet", "v3")
    assert isinstance(q, QualifiedName)
    assert (q.org, q.registry, q.collection, q.version) == ("acme", "model", "resnet", "v3")


def test_parse_qualified_name_alias_and_unicode() -> None:
    assert parse_qualified_name("acme/wandb-registry-Fine-tuned Models/lläma:prod") == (
        "acme",
        "Fine-tuned Models",
        "lläma",
        "prod",
    )


def test_parse_qualified_name_defaults_to_latest() -> None:
    assert DEFAULT_VERSION == "latest"
    assert parse_qualified_name("acme/wandb-registry-model/resnet") == (
        "acme",
        "model",
        "resnet",
        "latest",
    )


@pytest.mark.parametrize(
    ("args"),
    [
        ("acme", "model", "resnet", "production"),
        ("acme", "Fine-tuned Models", "llama 3", "v12"),
        ("org-1", "wandb-registry-x", "c", "v03"),
    ],
)
def test_qualified_name_round_trip(args: tuple[str, str, str, str]) -> None:
    assert parse_qualified_name(qualified_name(*args)) == args


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("@acme/model/resnet:v3", "no registry or entity"),
        ("acme/wandb-registry-/resnet:v3", "no registry or entity"),
        ("wandb-registry-model/resnet:v3", "expected"),
        ("a/b/wandb-registry-model/resnet:v3", "expected"),
        ("acme/wandb-registry-model/resnet:", "empty version"),
        ("/wandb-registry-model/resnet:v3", "empty path component"),
        ("acme/wandb-registry-model/:v3", "empty path component"),
        ("acme//resnet:v3", "empty path component"),
        ("acme/wandb-registry-model/resnet:prod/x", "must not contain"),
        ("acme/wandb-registry-model/resnet:a:b", "must not contain"),
        ("", "expected"),
    ],
)
def test_parse_qualified_name_errors(name: str, needle: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_qualified_name(name)
    assert needle in str(exc.value)
    assert repr(name) in str(exc.value)  # the message names the offending input


# --- is_safe_name ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "model.safetensors", "Fine-tuned Models", "données", "模型", "...", ".hidden", "a b", "x" * 255],
)
def test_is_safe_name_accepts(name: str) -> None:
    assert is_safe_name(name)


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "/", "a\0b", "x" * 256, "é" * 128, "\ud800"],
)
def test_is_safe_name_rejects(name: str) -> None:
    assert not is_safe_name(name)


def test_is_safe_name_counts_bytes_not_chars() -> None:
    assert is_safe_name("é" * 127 + "a")  # 255 bytes
    assert not is_safe_name("é" * 127 + "ab")  # 256 bytes


def test_is_safe_name_rejects_non_str() -> None:
    assert not is_safe_name(b"abc")  # type: ignore[arg-type]
    assert not is_safe_name(None)  # type: ignore[arg-type]


# --- parse_mount_path --------------------------------------------------------


def test_mount_root() -> None:
    p = parse_mount_path([])
    assert p == ParsedPath(Level.ROOT)
    assert p.project is None and p.qualified_name is None


def test_mount_org() -> None:
    p = parse_mount_path(["acme"])
    assert p.level is Level.ORG
    assert p.org == "acme"
    assert p.registry is None


def test_mount_registry_display_name() -> None:
    p = parse_mount_path(["acme", "Fine-tuned Models"])
    assert p.level is Level.REGISTRY
    assert p.registry == "Fine-tuned Models"
    assert p.project == "wandb-registry-Fine-tuned Models"
    assert p.via_prefix is False


def test_mount_registry_prefix_form() -> None:
    p = parse_mount_path(("acme", "wandb-registry-model"))
    assert p.level is Level.REGISTRY
    assert p.registry == "model"
    assert p.project == "wandb-registry-model"
    assert p.via_prefix is True


def test_mount_bare_prefix_is_a_display_name() -> None:
    p = parse_mount_path(["acme", "wandb-registry-"])
    assert p.registry == "wandb-registry-"
    assert p.via_prefix is False


def test_mount_collection() -> None:
    p = parse_mount_path(["acme", "model", "resnet50"])
    assert p.level is Level.COLLECTION
    assert (p.org, p.registry, p.collection) == ("acme", "model", "resnet50")
    assert p.version is None
    assert p.inner_path == ()


def test_mount_version_by_alias() -> None:
    p = parse_mount_path(["acme", "model", "resnet50", "production"])
    assert p.level is Level.VERSION
    assert p.version == VersionRef("alias", alias="production")
    assert p.via_qualified is False
    assert p.qualified_name == "acme/wandb-registry-model/resnet50:production"


def test_mount_version_by_index() -> None:
    p = parse_mount_path(["acme", "model", "resnet50", "v7"])
    assert p.level is Level.VERSION
    assert p.version == VersionRef("index", index=7)


def test_mount_version_v03_is_alias() -> None:
    p = parse_mount_path(["acme", "model", "resnet50", "v03"])
    assert p.version is not None and p.version.kind == "alias"


def test_mount_file() -> None:
    p = parse_mount_path(["acme", "model", "resnet50", "production", "model.safetensors"])
    assert p.level is Level.FILE
    assert p.inner_path == ("model.safetensors",)
    assert p.version == VersionRef("alias", alias="production")
    assert p.qualified_name == "acme/wandb-registry-model/resnet50:production"


def test_mount_nested_file_with_spaces_and_unicode() -> None:
    p = parse_mount_path(["acme", "Fine-tuned Models", "llama 3", "v2", "sub dir", "données.txt"])
    assert p.level is Level.FILE
    assert p.registry == "Fine-tuned Models"
    assert p.collection == "llama 3"
    assert p.inner_path == ("sub dir", "données.txt")


def test_mount_qualified_version_component() -> None:
    p = parse_mount_path(["acme", "model", "resnet50:production"])
    assert p.level is Level.VERSION
    assert p.collection == "resnet50"
    assert p.version == VersionRef("alias", alias="production")
    assert p.via_qualified is True
    assert p.inner_path == ()


def test_mount_qualified_with_files_below() -> None:
    p = parse_mount_path(["acme", "wandb-registry-model", "resnet50:v3", "weights", "a.bin"])
    assert p.level is Level.FILE
    assert p.via_prefix and p.via_qualified
    assert p.collection == "resnet50"
    assert p.version == VersionRef("index", index=3)
    assert p.inner_path == ("weights", "a.bin")
    assert p.qualified_name == "acme/wandb-registry-model/resnet50:v3"


def test_mount_qualified_and_nested_forms_agree() -> None:
    a = parse_mount_path(["acme", "model", "resnet50:v3", "f"])
    b = parse_mount_path(["acme", "model", "resnet50", "v3", "f"])
    assert dataclasses.replace(a, via_qualified=False) == b


def test_mount_collection_with_trailing_colon_is_plain_collection() -> None:
    # "resnet:" is not in qualified form (empty version) -> a collection name.
    p = parse_mount_path(["acme", "model", "resnet:"])
    assert p.level is Level.COLLECTION
    assert p.collection == "resnet:"


def test_mount_file_named_like_version() -> None:
    # Below the version, components are file names: "v3" or "a:b" are fine.
    p = parse_mount_path(["acme", "model", "c", "latest", "v3", "a:b"])
    assert p.level is Level.FILE
    assert p.inner_path == ("v3", "a:b")


@pytest.mark.parametrize(
    "parts",
    [
        [""],
        [".."],
        ["acme", "."],
        ["acme", "model", "a/b"],
        ["acme", "model", "c", "v1", "x\0y"],
        ["acme", "model", "c", "v1", "x" * 256],
    ],
)
def test_mount_rejects_unsafe_components(parts: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_mount_path(parts)


@pytest.mark.parametrize(
    "parts",
    [
        ["acme", "model", "c", "a:b"],  # alias can't contain ':'
        ["acme", "model", "c:a:b"],  # qualified version "a:b"
    ],
)
def test_mount_rejects_invalid_version(parts: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_mount_path(parts)


def test_parsed_path_is_frozen_and_hashable() -> None:
    p = parse_mount_path(["acme", "model", "c", "v1", "f"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.org = "x"  # type: ignore[misc]
    assert hash(p) == hash(parse_mount_path(("acme", "model", "c", "v1", "f")))


def test_level_is_str_enum() -> None:
    assert Level.FILE == "file"
    assert Level("version") is Level.VERSION


# --- project artifacts (@entity homes) ----------------------------------------

def test_a_project_artifact_name_parses_into_its_entity_home() -> None:
    from wandbfs.model.names import entity_home, home_entity

    q = parse_qualified_name("alice/resnet-training/checkpoint:v12")
    assert q == ("@alice", "resnet-training", "checkpoint", "v12")
    assert qualified_name(*q) == "alice/resnet-training/checkpoint:v12"
    assert parse_qualified_name("alice/p/ckpt").version == "latest"
    assert home_entity("@alice") == "alice" and home_entity("acme") is None and home_entity("@") is None
    assert entity_home("alice") == "@alice"
    for bad in ("", "a@b", "a/b"):
        with pytest.raises(ValueError):
            entity_home(bad)
    with pytest.raises(ValueError):
        parse_qualified_name("alice/wandb-registry-/ckpt:v1")   # the bare prefix is no project either
    with pytest.raises(ValueError):
        parse_qualified_name("@alice/p/ckpt:v1")                # the mark is the mount's, not a name's


def test_mount_paths_in_an_entity_home_have_a_type_level() -> None:
    p = parse_mount_path(["@alice", "train", "model", "ckpt", "best", "w", "a.pt"])
    assert (p.level, p.org, p.registry, p.type, p.collection, p.version.token, p.inner_path) == \
        (Level.FILE, "@alice", "train", "model", "ckpt", "best", ("w", "a.pt"))
    assert p.qualified_name == "alice/train/ckpt:best" and p.project == "train" and p.version_depth == 5
    q = parse_mount_path(["@alice", "train", "ckpt:v3"])
    assert (q.level, q.collection, q.version.token, q.via_qualified, q.version_depth) == \
        (Level.VERSION, "ckpt", "v3", True, 3)
    assert parse_mount_path(["@alice", "train", "model"]).level == Level.TYPE
    assert parse_mount_path(["@alice", "train", "model", "ckpt"]).level == Level.COLLECTION
    assert parse_mount_path(["acme", "model", "resnet", "v1"]).version_depth == 4   # registries unchanged


def test_the_listing_scope_of_a_path_skips_a_projects_type_folder() -> None:
    from wandbfs.model.names import listing_scope

    assert listing_scope(["acme", "model", "resnet", "v1", "f"]) == ("acme", "model", "resnet")
    assert listing_scope(["@alice", "train", "model", "ckpt", "v1"]) == ("@alice", "train", "ckpt")
    assert listing_scope(["@alice", "train", "model"]) == ("@alice", "train")
    assert listing_scope(["@alice", "train", "ckpt:best", "f"]) == ("@alice", "train", "ckpt")
    assert listing_scope(["acme", "model", "resnet:production"]) == ("acme", "model", "resnet")
    assert listing_scope([]) == ()
