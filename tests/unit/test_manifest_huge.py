"""Manifests read from raw JSON a window at a time (the path huge versions take) say exactly
what the same manifest says decoded whole: every entry shape, windows and odd entries."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from wandbfs.model.manifest import DIR, parse_manifest


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _contents(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i in range(n):
        d = md5_b64(str(i).encode())
        kind = i % 7
        path = f"dir-{i % 13}/f-{i:06d}.bin" if i % 3 else f"top-{i:06d}.bin"
        if kind == 0:
            out[path] = {"digest": d, "birthArtifactID": "QXJ0aWZhY3Q6MQ==", "size": i}
        elif kind == 1:
            out[path] = {"birthArtifactID": "QXJ0aWZhY3Q6Mg==", "digest": d, "extra": {}, "size": i}
        elif kind == 2:
            out[path] = {"digest": d, "size": i, "extra": {"alg": "MD5", "note": "x" * (i % 50)}}
        elif kind == 3:
            out[path] = {"digest": '"etag-%d"' % i, "size": i, "ref": f"s3://bkt/{i}"}
        elif kind == 4:
            out[f"esc\\aped \"{i}\".bin"] = {"digest": d, "size": i}
        elif kind == 5:
            out[path] = {"size": i, "digest": d}          # another key order
        else:
            out[f"bad/../{i}"] = {"digest": d, "size": i}  # skipped, but in the artifact digest
    return out


def _same(raw: bytes | str, doc: dict[str, Any]) -> None:
    """The window reader against ``json.loads`` of the same text (the same order, too)."""
    assert json.loads(raw) == doc
    a, b = parse_manifest(raw), parse_manifest(json.loads(raw))
    assert a.entries == b.entries
    assert list(a.entries) == list(b.entries)
    assert sorted(a.skipped) == sorted(b.skipped)
    assert a.raw_digests == b.raw_digests and a.digest() == b.digest()
    assert set(a.tree) == set(b.tree)
    for d in b.tree:
        assert list(a.tree[d].items()) == list(b.tree[d].items())


@pytest.mark.parametrize("dumps", [
    lambda d: json.dumps(d),
    lambda d: json.dumps(d, sort_keys=True),
    lambda d: json.dumps(d, separators=(",", ":")),
    lambda d: json.dumps(d, indent=2),
    lambda d: json.dumps(d, ensure_ascii=False),
])
def test_raw_and_decoded_manifests_agree(dumps: Any) -> None:
    doc = {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
           "storagePolicyConfig": {"storageLayout": "V2"}, "contents": _contents(3000)}
    raw = dumps(doc)
    _same(raw.encode(), doc)
    _same(raw, doc)


def test_a_manifest_larger_than_the_window_and_an_entry_larger_than_it() -> None:
    contents = _contents(30_000)   # about 3 MB: read in several windows
    contents["big/extra.bin"] = {"digest": md5_b64(b"big"), "size": 3, "extra": {"blob": "y" * 3_000_000}}
    doc = {"version": 1, "contents": contents}
    raw = json.dumps(doc).encode()
    assert len(raw) > 3 << 20
    _same(raw, doc)
    m = parse_manifest(raw)
    assert len(m.entries["big/extra.bin"].extra["blob"]) == 3_000_000
    assert m.tree[()]["big"] == DIR


def test_non_ascii_across_windows_and_a_number_at_a_window_edge() -> None:
    contents = {f"données/fichier-{i:06d}-é.txt": {"digest": md5_b64(str(i).encode()), "size": 10 ** (i % 15)}
                for i in range(20_000)}
    doc = {"version": 1, "contents": contents}
    _same(json.dumps(doc, ensure_ascii=False).encode("utf-8"), doc)


def test_invalid_json_after_a_window_is_still_an_error() -> None:
    doc = {"version": 1, "contents": _contents(20_000)}
    raw = json.dumps(doc).encode()
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_manifest(raw[:-5] + b"]]]]]")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_manifest(raw.replace(b'"size": 1234,', b'"size": 01234,', 1).replace(b'"size": 1234}', b'"size": 01234}', 1))


def test_entries_of_one_birth_share_what_they_share() -> None:
    raw = json.dumps({"version": 1, "contents": {
        f"f{i}": {"digest": md5_b64(str(i).encode()), "birthArtifactID": "QQ==", "size": i} for i in range(100)}})
    m = parse_manifest(raw)
    births = {id(e.birth_artifact_id) for e in m.entries.values()}
    assert len(births) == 1 and m.entries["f7"].birth_artifact_id == "QQ=="
    assert m.entries["f7"].alg == "md5" and m.entries["f7"].ref is None and m.entries["f7"].extra == {}
