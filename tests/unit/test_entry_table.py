"""The packed entry table a parsed manifest keeps (``model/entries.py``): the same entries
as the manifest says, whatever its order, repeats and odd entries, found by path and by
index; folders listed in name order with their sub-folders merged in; file nodes that
point into the table instead of holding an entry."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Any

from wandbfs.fuse.inodes import FileNode, InodeTable
from wandbfs.fuse.nodes import VersionDir
from wandbfs.model.entries import EntryTable, canonical_digest
from wandbfs.model.manifest import DIR, parse_manifest


def b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_an_unsorted_manifest_with_repeats_and_odd_entries_reads_as_json_loads_says() -> None:
    rng = random.Random(7)
    names = [f"d{i % 5}/f{i:04d}.bin" if i % 3 else f"top{i:04d}" for i in range(400)]
    rng.shuffle(names)
    members: list[tuple[str, dict[str, Any]]] = [(n, {"digest": b64(n.encode()), "size": len(n)}) for n in names]
    members += [
        ("d1/f0001.bin", {"digest": b64(b"again"), "size": 5}),                       # a repeat: this one wins
        ("ref.txt", {"digest": "etag-1", "size": 3, "ref": "s3://bkt/ref.txt"}),    # odd: a reference
        ("extra.txt", {"digest": b64(b"x"), "size": 1, "extra": {"note": "n"}}),    # odd: an extra object
        ("odd-digest", {"digest": "1B2M2Y8AsgTpgAmY7PhCfh==", "size": 0}),         # odd: not canonical base64
        ("xx.bin", {"digest": b64(b"xx"), "size": 2, "extra": {"alg": "XXH128"}}),
        ("born.bin", {"digest": b64(b"b"), "size": 1, "birthArtifactID": "QXJ0aWZhY3Q6OQ=="}),
        ("top0000", {"digest": b64(b"bad"), "size": -1}),                           # a later bad entry hides it
        ("d2/../x", {"digest": b64(b"x"), "size": 1}),                              # bad
    ]
    raw = "{" + '"version": 1, "contents": {' + ", ".join(
        f"{json.dumps(k)}: {json.dumps(v)}" for k, v in members) + "}}"
    want = dict(json.loads(raw)["contents"])
    del want["top0000"], want["d2/../x"]
    m = parse_manifest(raw.encode())
    t = m.entries
    assert isinstance(t, EntryTable)
    assert list(t) == sorted(want)                      # path order, each path once
    for path, spec in want.items():
        e = t[path]
        i = t.index_of(path)
        assert i is not None and t.path_at(i) == path and t.entry_at(i) == e
        assert (e.path, e.digest, e.size, e.ref) == (path, spec["digest"], spec["size"], spec.get("ref"))
        assert t.size_at(i) == spec["size"]
    assert t["odd-digest"].digest == "1B2M2Y8AsgTpgAmY7PhCfh==" and not canonical_digest("1B2M2Y8AsgTpgAmY7PhCfh==")
    assert t["d1/f0001.bin"].digest == b64(b"again")
    assert t["xx.bin"].alg == "xxh128" and t["born.bin"].birth_artifact_id == "QXJ0aWZhY3Q6OQ=="
    assert dict(t["extra.txt"].extra) == {"note": "n"}
    assert "top0000" not in t and t.get("top0000") is None and t.index_of("nope") is None
    assert sorted(p for p, r in m.skipped if "duplicate" in r) == ["d1/f0001.bin", "top0000"]
    assert m.raw_digests["top0000"] == b64(b"bad")      # the last one, as the artifact digest counts it
    assert dict(t.items()) == {p: t[p] for p in want} and list(t.values()) == [t[p] for p in sorted(want)]
    assert m.total_size == sum(v["size"] for v in want.values())

    plain = parse_manifest(json.dumps({"version": 1, "contents": dict(members[:400])}).encode())   # shuffled, no repeats
    assert list(plain.entries) == sorted(names)
    assert all(plain.entries[n].digest == b64(n.encode()) and plain.entries[n].size == len(n) for n in names)


def test_a_folder_lists_files_and_sub_folders_merged_by_name() -> None:
    paths = ["a/b.txt", "a/b/c.txt", "a/a.txt", "a/c", "a/bb/x", "a/d.txt", "z.txt"]
    m = parse_manifest(json.dumps({"version": 1, "contents": {p: {"digest": b64(p.encode()), "size": 1}
                                                              for p in paths}}).encode())
    listing = m.listdir(("a",))
    assert listing is not None
    assert list(listing) == ["a.txt", "b", "b.txt", "bb", "c", "d.txt"]
    assert [listing.index_at(k) >= 0 for k in range(len(listing))] == [True, False, True, False, True, True]
    assert [listing.kid(k)[1] for k in range(len(listing))] == list(listing)
    assert dict(listing.items())["b"] == DIR and dict(listing.items())["c"] == m.entries["a/c"]
    assert [e.path for e in m.following("a/b.txt")] == ["a/c", "a/d.txt"]
    assert [e.path for e in m.following("a/a.txt")] == ["a/b.txt", "a/c", "a/d.txt"]


def test_a_listed_file_node_points_into_the_table() -> None:
    m = parse_manifest(json.dumps({"version": 1, "contents": {f"f{i}": {"digest": b64(b"%d" % i), "size": i}
                                                              for i in range(50)}}).encode())
    table = InodeTable()
    table.add_root()
    listing = table.folder(VersionDir("acme", "model", "c", 0), m.listdir(()), 0.0)
    name, node = listing[7]
    assert isinstance(node, FileNode) and node.holds(m.entries, m.entries.index_of(name))
    assert node.entry == m.entries[name] and node.size == m.entries[name].size and node.path == name
    assert table.by_key(node.key) is node and listing[7][1] is node     # found again, not made again
