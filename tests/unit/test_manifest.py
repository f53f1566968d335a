"""Unit tests for wandbfs.model.manifest (manifest parsing and file tree)."""

from __future__ import annotations

from collections.abc import Iterator

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import xxhash

from wandbfs.model.manifest import (
    DIR,
    Manifest,
    ManifestEntry,
    artifact_digest,
    parse_manifest,
)


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def xxh_b64(data: bytes) -> str:
    return base64.b64encode(xxhash.xxh128(data).digest()).decode()


def ent(data: bytes = b"hello", **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"digest": md5_b64(data), "size": len(data)}
    d.update(kw)
    return d


def doc(contents: dict[str, Any], **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "version": 1,
        "storagePolicy": "wandb-storage-policy-v1",
        "storagePolicyConfig": {"storageLayout": "V2"},
        "contents": contents,
    }
    d.update(kw)
    return d


def skipped_reasons(m: Manifest) -> dict[str, str]:
    return dict(m.skipped)


# --- happy path ----------------------------------------------------------------


def test_parse_basic_manifest_fields() -> None:
    data = b"Notes go here\n"
    m = parse_manifest(
        doc({"sub/dir/notes.txt": ent(data, birthArtifactID="QXJ0aWZhY3Q6MTIz")})
    )
    e = m.entries["sub/dir/notes.txt"]
    assert e == ManifestEntry(
        path="sub/dir/notes.txt",
        digest=md5_b64(data),
        size=14,
        alg="md5",
        md5_hex=hashlib.md5(data).hexdigest(),
        birth_artifact_id="QXJ0aWZhY3Q6MTIz",
        ref=None,
        extra={},
    )
    assert e.hex_digest == hashlib.md5(data).hexdigest()
    assert e.parts == ("sub", "dir", "notes.txt")
    assert e.name == "notes.txt"
    assert not e.is_reference
    assert e.has_content_digest
    assert m.storage_layout == "V2"
    assert m.storage_policy == "wandb-storage-policy-v1"
    assert m.storage_region is None
    assert m.skipped == []


def test_parse_accepts_bytes_and_str() -> None:
    d = doc({"a.txt": ent()})
    from_dict = parse_manifest(d)
    from_bytes = parse_manifest(json.dumps(d).encode())
    from_str = parse_manifest(json.dumps(d))
    assert from_dict.entries == from_bytes.entries == from_str.entries
    assert from_dict.tree == from_bytes.tree


def test_tree_structure_and_sorting() -> None:
    m = parse_manifest(
        doc(
            {
                "z.txt": ent(b"z"),
                "b/c/d.bin": ent(b"d"),
                "a.txt": ent(b"a"),
                "b/a.txt": ent(b"ba"),
                "B.txt": ent(b"B"),
            }
        )
    )
    assert set(m.tree) == {(), ("b",), ("b", "c")}
    assert list(m.tree[()]) == ["B.txt", "a.txt", "b", "z.txt"]
    assert m.tree[()]["b"] == DIR
    assert m.tree[()]["a.txt"] == m.entries["a.txt"]   # entries are made when asked for (equal, not one object)
    assert list(m.tree[("b",)]) == ["a.txt", "c"]
    assert m.tree[("b",)]["c"] == DIR
    assert list(m.tree[("b", "c")]) == ["d.bin"]
    assert m.tree[("b", "c")]["d.bin"] == m.entries["b/c/d.bin"]


def test_empty_manifest_has_root() -> None:
    m = parse_manifest(doc({}))
    assert m.entries == {}
    assert m.tree == {(): {}}
    assert m.listdir(()) == {}
    assert m.total_size == 0


def test_lookup_and_listdir() -> None:
    m = parse_manifest(doc({"a/b.txt": ent(b"x"), "c.txt": ent(b"yy")}))
    assert m.lookup(()) == DIR
    assert m.lookup(["a"]) == DIR
    assert m.lookup(("a", "b.txt")) == m.entries["a/b.txt"]
    assert m.lookup(("c.txt",)) == m.entries["c.txt"]
    assert m.lookup(("nope",)) is None
    assert m.lookup(("a", "nope")) is None
    assert m.lookup(("c.txt", "below-a-file")) is None
    assert m.listdir(("a",)) == {"b.txt": m.entries["a/b.txt"]}
    assert m.listdir(("c.txt",)) is None
    assert m.total_size == 3


def test_tree_is_read_only() -> None:
    m = parse_manifest(doc({"a.txt": ent()}))
    with pytest.raises(TypeError):
        m.tree[()]["x"] = DIR  # type: ignore[index]
    with pytest.raises(TypeError):
        m.entries["x"] = m.entries["a.txt"]  # type: ignore[index]


def test_names_with_spaces_and_non_ascii() -> None:
    paths = ["Fine-tuned Models/modèle final.bin", "données/日本語 ファイル.txt", "emoji 🚀.md"]
    m = parse_manifest(json.dumps(doc({p: ent(p.encode()) for p in paths})).encode())
    assert set(m.entries) == set(paths)
    assert m.lookup(("données", "日本語 ファイル.txt")) == m.entries["données/日本語 ファイル.txt"]
    assert "Fine-tuned Models" in m.tree[()]
    assert m.skipped == []


def test_component_of_exactly_255_bytes_is_kept() -> None:
    name = "é" * 127 + "a"  # 255 bytes in UTF-8
    m = parse_manifest(doc({f"d/{name}": ent()}))
    assert f"d/{name}" in m.entries


def test_entry_is_hashable() -> None:
    m = parse_manifest(doc({"a.txt": ent(extra={"k": "v"})}))
    e = m.entries["a.txt"]
    assert {e: 1}[e] == 1
    assert e.extra == {"k": "v"}


def test_storage_region_and_missing_policy_config() -> None:
    m = parse_manifest(doc({}, storagePolicyConfig={"storageLayout": "V1", "storageRegion": "coreweave-us"}))
    assert (m.storage_layout, m.storage_region) == ("V1", "coreweave-us")
    d = doc({})
    del d["storagePolicyConfig"]
    assert parse_manifest(d).storage_layout is None


# --- digest algorithms and references ----------------------------------------


def test_xxh128_entry() -> None:
    data = b"some weights"
    m = parse_manifest(doc({"w.bin": {"digest": xxh_b64(data), "size": len(data), "extra": {"alg": "XXH128"}}}))
    e = m.entries["w.bin"]
    assert e.alg == "xxh128"
    assert e.md5_hex is None
    assert e.hex_digest == xxhash.xxh128(data).hexdigest()
    assert e.extra == {"alg": "XXH128"}


def test_explicit_md5_tag() -> None:
    m = parse_manifest(doc({"a": ent(extra={"alg": "MD5"})}))
    assert m.entries["a"].alg == "md5"
    assert m.entries["a"].md5_hex is not None


@pytest.mark.parametrize("tag", ["SHA256", "xxh128", 5, None])
def test_unknown_alg_tag(tag: Any) -> None:
    m = parse_manifest(doc({"a": ent(extra={"alg": tag})}))
    if tag is None:  # explicit null = untagged = md5
        assert m.entries["a"].alg == "md5"
    else:
        assert m.entries == {}
        assert "unsupported digest algorithm" in skipped_reasons(m)["a"]


def test_reference_entries() -> None:
    m = parse_manifest(
        doc(
            {
                "s3.bin": {"digest": '"9b2cf535f27731c974343645a3985328"', "size": 10, "ref": "s3://bkt/k.bin"},
                "gs.bin": {"digest": "CJ2r7eHn8fACEAE=", "size": 3, "ref": "gs://bkt/g.bin"},
                "http.bin": {"digest": "https://example.com/f", "size": 1, "ref": "https://example.com/f"},
                "local.txt": {"digest": md5_b64(b"hi"), "size": 2, "ref": "file:///data/local.txt"},
            }
        )
    )
    assert m.skipped == []
    s3 = m.entries["s3.bin"]
    assert s3.is_reference and s3.ref_scheme == "s3"
    assert not s3.has_content_digest
    assert s3.hex_digest is None and s3.md5_hex is None
    assert not m.entries["gs.bin"].has_content_digest
    assert m.entries["http.bin"].hex_digest is None
    local = m.entries["local.txt"]
    assert local.ref_scheme == "file"
    assert local.has_content_digest
    assert local.md5_hex == hashlib.md5(b"hi").hexdigest()


def test_file_reference_needs_real_md5() -> None:
    m = parse_manifest(doc({"l": {"digest": "not-base64!", "size": 2, "ref": "file:///x"}}))
    assert "not a base64 128-bit hash" in skipped_reasons(m)["l"]


# --- bad entries are skipped, logged, recorded -------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../etc/passwd", "'..' path component"),
        ("a/../../b", "'..' path component"),
        ("a/..", "'..' path component"),
        ("./a", "'.' path component"),
        ("a/./b", "'.' path component"),
        ("/etc/passwd", "absolute path"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("", "empty path"),
        ("a\0b", "path contains NUL"),
        ("d/" + "x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
        ("bad\ud800name", "not valid UTF-8"),
    ],
)
def test_bad_paths_are_skipped(path: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wandbfs.model.manifest"):
        m = parse_manifest(doc({path: ent(), "good.txt": ent()}))
    assert list(m.entries) == ["good.txt"]
    assert reason in skipped_reasons(m)[path]
    assert len(m.skipped) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert reason in warnings[0].getMessage()
    # nothing from the bad path leaks into the tree
    assert set(m.tree) == {()}
    assert list(m.tree[()]) == ["good.txt"]


def test_bad_paths_from_raw_json() -> None:
    raw = b'{"version":1,"contents":{"a\\u0000b":{"digest":"1B2M2Y8AsgTpgAmY7PhCfg==","size":0},' \
          b'"x\\ud800":{"digest":"1B2M2Y8AsgTpgAmY7PhCfg==","size":0},' \
          b'"ok":{"digest":"1B2M2Y8AsgTpgAmY7PhCfg==","size":0}}}'
    m = parse_manifest(raw)
    assert list(m.entries) == ["ok"]
    assert skipped_reasons(m) == {"a\0b": "path contains NUL", "x\ud800": "path is not valid UTF-8"}


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"size": 1}, "missing digest"),
        ({"digest": "", "size": 1}, "missing digest"),
        ({"digest": None, "size": 1}, "missing digest"),
        ({"digest": 123, "size": 1}, "missing digest"),
        ({"digest": md5_b64(b"x")}, "missing size"),
        ({"digest": md5_b64(b"x"), "size": None}, "missing size"),
        ({"digest": md5_b64(b"x"), "size": -1}, "negative size"),
        ({"digest": md5_b64(b"x"), "size": 2**63}, "size out of range"),
        ({"digest": md5_b64(b"x"), "size": 2**64 + 5}, "size out of range"),
        ({"digest": md5_b64(b"x"), "size": 1e30}, "size is not an integer"),
        ({"digest": md5_b64(b"x")[:-2], "size": 1}, "not a base64 128-bit hash"),
        ({"digest": md5_b64(b"x") + "AA", "size": 1}, "not a base64 128-bit hash"),
        ({"digest": base64.b64encode(b"x" * 32).decode(), "size": 1}, "not a base64 128-bit hash"),
        ({"digest": hashlib.md5(b"x").hexdigest(), "size": 1}, "not a base64 128-bit hash"),
        ({"digest": md5_b64(b"x"), "size": 1, "extra": {"alg": "XXH128"}, "ref": "file:///x"}, None),
        ({"digest": "zzz", "size": 1, "extra": {"alg": "XXH128"}}, "not a base64 128-bit hash"),
        ({"digest": md5_b64(b"x"), "size": 1.5}, "size is not an integer"),
        ({"digest": md5_b64(b"x"), "size": "10"}, "size is not an integer"),
        ({"digest": md5_b64(b"x"), "size": True}, "size is not an integer"),
        ({"digest": "zzz", "size": 1}, "not a base64 128-bit hash"),
        ({"digest": base64.b64encode(b"short").decode(), "size": 1}, "not a base64 128-bit hash"),
        ({"digest": md5_b64(b"x"), "size": 1, "extra": "nope"}, "extra is not an object"),
        ({"digest": md5_b64(b"x"), "size": 1, "ref": 5}, "ref is not a string"),
        ({"digest": md5_b64(b"x"), "size": 1, "ref": ""}, "ref is not a string"),
        ({"digest": md5_b64(b"x"), "size": 1, "birthArtifactID": 7}, "birthArtifactID is not a string"),
        ("not an object", "entry is not an object"),
        (None, "entry is not an object"),
    ],
)
def test_bad_entry_fields_are_skipped(entry: Any, reason: str | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wandbfs.model.manifest"):
        m = parse_manifest(doc({"bad": entry, "good": ent()}))
    if reason is None:   # a control: the same shape, valid, is kept
        assert sorted(m.entries) == ["bad", "good"] and not m.skipped
        return
    assert list(m.entries) == ["good"]
    assert reason in skipped_reasons(m)["bad"]
    assert any("bad" in r.getMessage() and reason in r.getMessage() for r in caplog.records)


def test_largest_size_is_kept_and_one_more_hides_only_that_entry(caplog: pytest.LogCaptureFixture) -> None:
    """st_size is a signed 64-bit off_t: 2^63-1 is shown, 2^63 would fail the whole folder's readdir."""
    raw = json.dumps(doc({"max.bin": ent(size=2**63 - 1), "over.bin": ent(size=2**63), "ok.txt": ent()}))
    with caplog.at_level(logging.WARNING, logger="wandbfs.model.manifest"):
        m = parse_manifest(raw)
    assert sorted(m.entries) == ["max.bin", "ok.txt"]
    assert m.entries["max.bin"].size == 2**63 - 1
    assert list(m.tree[()]) == ["max.bin", "ok.txt"]
    assert "over.bin" in m.raw_digests          # still part of the artifact digest
    assert [r.getMessage() for r in caplog.records] == [
        "manifest: skipping entry 'over.bin': size out of range: 9223372036854775808 (more than 2^63-1 bytes)"]


def test_zero_size_is_fine() -> None:
    m = parse_manifest(doc({"empty": ent(b"")}))
    assert m.entries["empty"].size == 0


def test_duplicate_keys_in_raw_json_last_wins(caplog: pytest.LogCaptureFixture) -> None:
    first, second = md5_b64(b"first"), md5_b64(b"second!")
    raw = (
        '{"version": 1, "contents": {'
        f'"dup.txt": {{"digest": "{first}", "size": 5}}, '
        '"other.txt": {"digest": "1B2M2Y8AsgTpgAmY7PhCfg==", "size": 0}, '
        f'"dup.txt": {{"digest": "{second}", "size": 7}}'
        "}}"
    ).encode()
    with caplog.at_level(logging.WARNING, logger="wandbfs.model.manifest"):
        m = parse_manifest(raw)
    # json.loads (and so the SDK) keeps the last value; so do we.
    assert json.loads(raw)["contents"]["dup.txt"]["digest"] == second
    assert m.entries["dup.txt"].digest == second
    assert m.entries["dup.txt"].size == 7
    assert set(m.entries) == {"dup.txt", "other.txt"}
    assert [p for p, r in m.skipped if "duplicate" in r] == ["dup.txt"]
    assert any("duplicate" in r.getMessage() for r in caplog.records)


def test_duplicate_keys_in_nested_objects_are_not_reported() -> None:
    raw = b'{"version": 1, "contents": {"a": {"digest": "1B2M2Y8AsgTpgAmY7PhCfg==", "size": 1, "size": 0}}}'
    m = parse_manifest(raw)
    assert m.entries["a"].size == 0
    assert m.skipped == []


@pytest.mark.parametrize("order", ["file_first", "folder_first"])
def test_file_folder_clash_keeps_folder(order: str, caplog: pytest.LogCaptureFixture) -> None:
    items = [("model", ent(b"file")), ("model/weights.bin", ent(b"w"))]
    if order == "folder_first":
        items.reverse()
    with caplog.at_level(logging.WARNING, logger="wandbfs.model.manifest"):
        m = parse_manifest(doc(dict(items)))
    assert list(m.entries) == ["model/weights.bin"]
    assert "file/folder clash" in skipped_reasons(m)["model"]
    assert m.tree[()] == {"model": DIR}
    assert m.lookup(("model",)) == DIR
    assert any("model" in r.getMessage() and "clash" in r.getMessage() for r in caplog.records)


def test_deep_file_folder_clash() -> None:
    m = parse_manifest(doc({"a/b": ent(b"1"), "a/b/c/d": ent(b"2"), "a/e": ent(b"3")}))
    assert set(m.entries) == {"a/b/c/d", "a/e"}
    assert m.tree[("a",)] == {"b": DIR, "e": m.entries["a/e"]}
    assert skipped_reasons(m).keys() == {"a/b"}


def test_many_bad_entries_do_not_hide_good_ones() -> None:
    contents: dict[str, Any] = {f"bad{i}/../x": ent() for i in range(50)}
    contents.update({f"good/{i}.txt": ent(str(i).encode()) for i in range(50)})
    m = parse_manifest(doc(contents))
    assert len(m.entries) == 50
    assert len(m.skipped) == 50
    assert len(m.tree[("good",)]) == 50


# --- whole-manifest errors raise -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        ({"contents": {}}, "unsupported manifest version"),
        ({"version": 2, "contents": {}}, "unsupported manifest version"),
        ({"version": "1", "contents": {}}, "unsupported manifest version"),
        ({"version": True, "contents": {}}, "unsupported manifest version"),
        ({"version": 1}, "no 'contents' object"),
        ({"version": 1, "contents": []}, "no 'contents' object"),
    ],
)
def test_unusable_manifest_raises(data: Any, needle: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_manifest(data)
    assert needle in str(exc.value)


# --- artifact digest ---------------------------------------------------------------


def test_artifact_digest_formula() -> None:
    entries = {"b.txt": md5_b64(b"b"), "a.txt": md5_b64(b"a")}
    expected_input = (
        "wandb-artifact-manifest-v1\n" + f"a.txt:{entries['a.txt']}\n" + f"b.txt:{entries['b.txt']}\n"
    )
    assert artifact_digest(entries) == hashlib.md5(expected_input.encode()).hexdigest()
    assert artifact_digest(entries, "xxh128") == xxhash.xxh128(expected_input.encode()).hexdigest()


def test_artifact_digest_accepts_entries_and_order_independent() -> None:
    m = parse_manifest(doc({"z": ent(b"z"), "a/b": ent(b"ab"), "m n": ent(b"mn")}))
    as_list = list(m.entries.values())
    assert artifact_digest(m.entries) == artifact_digest(as_list) == artifact_digest(reversed(as_list))
    assert m.digest() == artifact_digest(m.entries)


def test_artifact_digest_empty() -> None:
    assert artifact_digest({}) == hashlib.md5(b"wandb-artifact-manifest-v1\n").hexdigest()


def test_artifact_digest_rejects_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        artifact_digest({}, "sha1")  # type: ignore[arg-type]


def test_manifest_digest_covers_skipped_entries() -> None:
    # The server's digest covers every entry; we must not drop skipped ones.
    contents = {"good": ent(b"g"), "../evil": ent(b"e")}
    m = parse_manifest(doc(contents))
    assert list(m.entries) == ["good"]
    assert m.digest() == artifact_digest({p: e["digest"] for p, e in contents.items()})
    assert m.digest() != artifact_digest(m.entries)


# --- agreement with the installed wandb SDK ----------------------------------


@pytest.fixture
def sdk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Keep SDK staging/cache writes inside tmp_path, and stay offline (and do not leave the
    SDK's process-wide settings offline for the tests that run after this one)."""
    import wandb

    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello\n")
    (src / "sub dir" / "données.txt").write_bytes("données\n".encode())
    (src / "empty").write_bytes(b"")
    yield src
    wandb.teardown()


@pytest.mark.parametrize("alg", ["MD5", "XXH128"])
def test_matches_sdk_manifest_and_digest(sdk_env: Path, alg: str) -> None:
    import wandb

    art = wandb.Artifact("thing", type="model", digest_algorithm=alg)
    art.add_file(str(sdk_env / "a.txt"))
    art.add_file(str(sdk_env / "sub dir" / "données.txt"), name="sub dir/données.txt")
    art.add_file(str(sdk_env / "empty"), name="deep/er/empty")
    art.add_reference((sdk_env / "a.txt").as_uri(), name="refs/a.txt")

    manifest_json = art.manifest.to_manifest_json()
    m = parse_manifest(json.dumps(manifest_json).encode())
    assert m.skipped == []
    assert set(m.entries) == {"a.txt", "sub dir/données.txt", "deep/er/empty", "refs/a.txt"}

    ours_alg = "xxh128" if alg == "XXH128" else "md5"
    for path, sdk_entry in art.manifest.entries.items():
        e = m.entries[path]
        assert e.digest == sdk_entry.digest
        assert e.size == sdk_entry.size
        assert e.ref == sdk_entry.ref
        local = sdk_entry.local_path or (sdk_env / "a.txt")
        content = Path(local).read_bytes()
        if e.ref is None:
            assert e.alg == ours_alg
            expected_hex = (
                xxhash.xxh128(content).hexdigest() if ours_alg == "xxh128" else hashlib.md5(content).hexdigest()
            )
            # the manifest stores base64 of the raw 16-byte digest, for xxh128 too
            assert e.hex_digest == expected_hex
        else:
            # the SDK's file:// handler always records md5, whatever the artifact alg
            assert e.alg == "md5"
            assert e.md5_hex == hashlib.md5(content).hexdigest()

    assert m.digest(ours_alg) == art.manifest.digest() == art.digest


@pytest.mark.parametrize("alg", ["MANIFEST_MD5", "MANIFEST_XXH128"])
def test_artifact_digest_matches_sdk_manifest_v1(alg: str) -> None:
    from wandb.sdk.artifacts._generated import ArtifactDigestAlgorithm
    from wandb.sdk.artifacts.artifact_manifests.artifact_manifest_v1 import ArtifactManifestV1

    contents = {
        "b/c.txt": ent(b"c"),
        "a.txt": ent(b"a"),
        "Fine-tuned Models/modèle.bin": ent(b"m"),
        "ref.bin": {"digest": "etag-123", "size": 4, "ref": "s3://bkt/ref.bin"},
    }
    d = doc(contents)
    sdk = ArtifactManifestV1.from_manifest_json(d, ArtifactDigestAlgorithm(alg))
    ours = parse_manifest(d)
    assert ours.digest("xxh128" if alg.endswith("XXH128") else "md5") == sdk.digest()
