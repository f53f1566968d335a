"""A lazy folder (``inodes.FolderListing`` of ``lazy_min`` files or more): listing its files
makes no node, yet every file keeps the inode number its node would have, the kernel's
references to it are counted once (in the folder's arrays, then in its node once one is
made), forgotten, and found again by number; a number another object already has leaves
the file a node of its own."""

from __future__ import annotations

import base64
import hashlib
import json

from wandbfs.fuse.inodes import FileNode, InodeTable, Node, inode_for
from wandbfs.fuse.nodes import Org, VersionDir
from wandbfs.model.manifest import parse_manifest

N = 300
V = VersionDir("acme", "model", "c", 2)


def _manifest(n: int = N):
    return parse_manifest(json.dumps({"version": 1, "contents": {
        f"f{i:04d}": {"digest": base64.b64encode(hashlib.md5(b"%d" % i).digest()).decode(), "size": i}
        for i in range(n)} | {"sub/x": {"digest": base64.b64encode(b"x" * 16).decode(), "size": 1}}}).encode())


def _list_all(listing):
    """What readdir does with each child: send it, then count the kernel's reference."""
    out = []
    for i in range(len(listing)):
        name, node, ino, size = listing.child(i)
        if node is None:
            listing.hold(i)
        else:
            node.lookups += 1
        out.append((name, node, ino, size))
    return out


def test_listed_files_get_their_numbers_and_counts_but_no_node() -> None:
    m = _manifest()
    table = InodeTable(lazy_min=100)
    table.add_root()
    listing = table.folder(V, m.listdir(()), 5.0)
    before = len(table)
    sent = _list_all(listing)
    files = [s for s in sent if s[0] != "sub"]
    assert all(node is None for _, node, _, _ in files)                          # no node per file
    assert [(name, ino, size) for name, _, ino, size in files] == [
        (name, inode_for(("path", *V.key[1:], name)), m.entries[name].size) for name, _, _, _ in files]
    assert dict((s[0], s[1]) for s in sent)["sub"].kind == "dir"              # folders are nodes
    assert len(table) == before + N + 1                                          # held: counted
    _list_all(listing)                                                           # listed again: 2 refs each

    name, _, ino, _ = files[7]
    node = table.get(ino)                                                        # the kernel asks: made now
    assert isinstance(node, FileNode) and node.path == name and node.lookups == 2
    assert node.entry == m.entries[name] and node.mtime == 5.0
    assert table.get(ino) is node and len(table) == before + N + 1               # counted once
    assert listing.child(7)[1] is node                                           # listed: the node counts it
    node.lookups += 1
    table.forget(ino, 3)
    assert table.get(ino) is None                                                # forgotten: gone

    other = files[8][2]
    table.forget(other, 1)
    assert table.get(other).lookups == 1                                         # one of two left
    table.forget(files[9][2], 2)
    assert table.get(files[9][2]) is None and len(table) == before + N + 1 - 2   # 7 and 9 gone, 8 a node
    # a lookup of a file the kernel forgot makes its node, with the same number
    looked = table.upsert_file(V, m.entries, 0.0, m.entries.index_of(files[9][0]))
    assert looked.inode == files[9][2] and looked.lookups == 0


def test_lazy_and_eager_folders_give_the_same_numbers() -> None:
    m = _manifest()
    lazy, eager = InodeTable(lazy_min=100), InodeTable(lazy_min=10 ** 6)
    a = [(n, ino) for n, _, ino, _ in _list_all(lazy.folder(V, m.listdir(()), 0.0))]
    b = [(n, ino) for n, _, ino, _ in _list_all(eager.folder(V, m.listdir(()), 0.0))]
    assert a == b and len(lazy) == len(eager)


def test_a_file_looked_up_before_its_folder_is_listed_keeps_its_node() -> None:
    m = _manifest()
    table = InodeTable(lazy_min=100)
    ix = m.entries.index_of("f0042")
    node = table.upsert_file(V, m.entries, 0.0, ix)
    node.lookups = 1
    sent = {name: (n, ino) for name, n, ino, _ in _list_all(table.folder(V, m.listdir(()), 0.0))}
    assert sent["f0042"] == (node, node.inode) and node.lookups == 2


def test_a_number_another_object_has_leaves_the_file_a_node_of_its_own() -> None:
    m = _manifest()
    table = InodeTable(lazy_min=100)
    taken = inode_for(("path", *V.key[1:], "f0005"))
    squatter = table._by_ino[taken] = Node(taken, Org("someone"))            # a (63-bit) hash collision
    sent = {name: (n, ino) for name, n, ino, _ in _list_all(table.folder(V, m.listdir(()), 0.0))}
    node, ino = sent["f0005"]
    assert isinstance(node, FileNode) and node.path == "f0005" and ino == node.inode != taken
    assert table.get(taken) is squatter and table.get(ino) is node and node.lookups == 1
    again = {name: (n, ino) for name, n, ino, _ in _list_all(table.folder(V, m.listdir(()), 0.0))}
    assert again["f0005"] == (node, ino) and node.lookups == 2
    table.forget(taken, 5)
    assert table.get(ino) is node                                                # not the squatter's refs


def test_a_file_taken_by_index_before_it_is_listed_is_still_found_by_number() -> None:
    m = _manifest()
    table = InodeTable(lazy_min=100)
    listing = table.folder(V, m.listdir(()), 0.0)
    name, node = listing[7]                      # the Sequence way first (no readdir yet)
    table.forget(node.inode, 0)                  # nobody holds it: freed
    _, none, ino, _ = listing.child(7)           # then listed: held in the folder's arrays
    listing.hold(7)
    assert none is None and ino == node.inode
    assert table.get(ino).path == name           # found again from the number
    table.forget(ino, 1)
    assert table.get(ino) is None and table.lazy_held == 0


def test_two_lazy_folders_never_hand_out_one_number(monkeypatch) -> None:
    """A number a file of another lazy folder has (a faked 63-bit collision) leaves the
    second file a node with a number of its own, as an eager folder does."""
    import wandbfs.fuse.inodes as inodes
    other = VersionDir("acme", "model", "c", 1)
    real = inodes._VersionFiles.inode_for
    taken = real(inodes._VersionFiles(other), "f0005")
    monkeypatch.setattr(inodes._VersionFiles, "inode_for",
                        lambda self, p: taken if (self.version == V and p == "f0009") else real(self, p))
    m = _manifest()
    table = InodeTable(lazy_min=100)
    first, second = table.folder(other, m.listdir(()), 0.0), table.folder(V, m.listdir(()), 0.0)
    a = _list_all(first)[5]
    b = _list_all(second)[9]
    assert a[2] == taken and a[1] is None and b[1] is not None and b[2] != taken
    table.forget(taken, 1)                       # the first folder's file let go
    assert table.get(taken) is None and table.get(b[2]).path == "f0009" and table.get(b[2]).lookups == 1


def test_a_file_given_another_number_keeps_it_when_its_folder_is_listed() -> None:
    m = _manifest()
    table = InodeTable(lazy_min=100)
    taken = inode_for(("path", *V.key[1:], "f0005"))
    table._by_ino[taken] = Node(taken, Org("someone"), lookups=1)            # a collision
    looked = table.upsert_file(V, m.entries, 0.0, m.entries.index_of("f0005"))
    looked.lookups += 1
    table.forget(taken, 1)                                                     # the other object goes
    sent = {name: (n, ino) for name, n, ino, _ in _list_all(table.folder(V, m.listdir(()), 0.0))}
    assert sent["f0005"] == (looked, looked.inode) and looked.lookups == 2
