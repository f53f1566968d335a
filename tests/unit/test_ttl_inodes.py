"""TTL map and inode table: pure bookkeeping, tested with an injected clock."""

from wandbfs.fuse.inodes import ROOT_INODE, InodeTable, inode_for
from wandbfs.fuse.nodes import File, Org
from wandbfs.model.manifest import ManifestEntry
from wandbfs.model.ttl import TtlMap


def test_ttl_expiry_and_stale_value():
    now = [100.0]
    m: TtlMap[str] = TtlMap(clock=lambda: now[0])
    m.put("k", "v", ttl=5)
    assert m.get("k") == "v" and "k" in m
    now[0] += 4.9
    assert m.get("k") == "v"
    now[0] += 0.2
    assert m.get("k") is None and "k" not in m
    assert m.stale("k") == "v"  # what offline serving can fall back to
    m.put("k", "w", ttl=1)
    assert m.get("k") == "w"
    m.clear()
    assert m.get("k") is None and m.stale("k") is None


def test_inode_numbers_are_stable_and_never_root():
    key = ("path", "acme", "model", "resnet", 3, "a/b.txt")
    assert inode_for(key) == inode_for(tuple(key))
    assert inode_for(key) != inode_for(("path", "acme", "model", "resnet", 4, "a/b.txt"))
    assert all(inode_for(("k", i)) not in (0, ROOT_INODE) for i in range(1000))


def test_lookup_counts_and_forget():
    t = InodeTable()
    root = t.add_root()
    n = t.upsert(Org("acme"), 0.0)
    assert t.upsert(Org("acme"), 1.0) is n and n.mtime == 1.0
    t.incref(n, 2)
    t.forget(n.inode, 1)
    assert t.get(n.inode) is n
    t.forget(n.inode, 1)
    assert t.get(n.inode) is None and t.by_key(("org", "acme")) is None
    t.forget(root.inode, 5)
    assert t.get(ROOT_INODE) is root  # the root is pinned
    f = t.upsert(File("acme", "model", "resnet", 3, ("a.txt",), entry=ManifestEntry("a.txt", "x", 1)), 0.0)
    f.open_handles = 1
    t.incref(f)
    t.forget(f.inode, 1)
    assert t.get(f.inode) is f  # an open file is not freed
