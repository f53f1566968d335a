"""The inode table: a stable inode number per filesystem object, with kernel lookup counts.

Each inode is a typed node (``nodes.py``: ``Org``, ``VersionDir``, ``File``, ...) whose key
names the object by what it is, not by path: ``("ver", org, reg, coll, 3)`` for the
version dir ``v3``, ``("path", org, reg, coll, 3, "a/b.txt")`` for a file in it. The inode
number is a hash of the key, so the same (version, path) gets the same inode in every
mount and after remounts, which keeps tools that compare ``st_ino`` (tar, rsync, find
-samefile) honest. Entries live while the kernel holds a lookup reference (pyfuse3's
``forget``), a file handle has them open, or the filesystem pins them (the root).

Listing a folder hands the kernel every entry in it (``readdirplus``), and each entry is a
reference the kernel holds until it forgets it. A file's node is therefore small: slotted,
pointing into its manifest's packed table and at its version's one shared ``VersionDir``
(its ``place`` is made when asked), found by its inode alone (the hash of its key: no
second index by key), and its inode is hashed from a prefix computed once per version.
A folder of ``LAZY_MIN`` files or more (a version of 200,000) makes no node at all for
the files it lists: their numbers and references stay in the folder's arrays until the
kernel asks about one (``FolderListing``).
"""

from __future__ import annotations

import hashlib
import stat as statmod
from array import array
from typing import Any, Sequence

from wandbfs.fuse.nodes import AliasLink, File, InVersion, Key, Link, Place, RegistryPrefixLink, Root, VersionDir
from wandbfs.model.entries import EntryTable
from wandbfs.model.manifest import DirListing, ManifestEntry

ROOT_INODE = 1  # pyfuse3.ROOT_INODE

_S_IFMT = {"dir": statmod.S_IFDIR, "file": statmod.S_IFREG, "symlink": statmod.S_IFLNK}
_FILE_MODE = statmod.S_IFREG | File.mode
_MASK = (1 << 63) - 1


class Node:
    """One inode: what it is (``place``), and the counts that keep it alive."""

    __slots__ = ("inode", "_place", "mtime", "lookups", "open_handles")

    def __init__(self, inode: int, place: Place, mtime: float = 0.0, lookups: int = 0,
                 open_handles: int = 0) -> None:
        self.inode = inode
        self._place: Any = place
        self.mtime = mtime
        self.lookups = lookups              # the kernel's references (lookup, readdir; minus forget)
        self.open_handles = open_handles    # open file handles on it (handles.py)

    @property
    def pinned(self) -> bool:
        """Kept whatever the counts say: the root (a slot less in every node)."""
        return self.inode == ROOT_INODE

    @property
    def place(self) -> Place:
        return self._place  # type: ignore[no-any-return]

    @place.setter
    def place(self, place: Place) -> None:
        self._place = place

    @property
    def key(self) -> Key:
        return self.place.key

    @property
    def kind(self) -> str:
        """"dir", "file" or "symlink"."""
        return self.place.kind

    @property
    def mode(self) -> int:
        return self.place.mode

    @property
    def immutable(self) -> bool:
        """Inside a version: contents never change."""
        return self.place.immutable

    @property
    def size(self) -> int:
        return self.place.size if isinstance(self.place, File) else 0

    @property
    def target(self) -> str:
        """A symlink's target, relative ("" for anything else)."""
        return self.target_at(None)

    def target_at(self, mountpoint: str | None) -> str:
        """A symlink's target, absolute under ``mountpoint`` (relative when None)."""
        return self.place.target_at(mountpoint) if isinstance(self.place, Link) else ""

    @property
    def st_mode(self) -> int:
        return _S_IFMT[self.kind] | self.mode

    def __repr__(self) -> str:
        return f"Node({self.inode}, {self.place!r}, lookups={self.lookups}, open={self.open_handles})"


class FileNode(Node):
    """A file inside a version: its version (shared by all its files) and its file in the
    manifest's packed table (the table and the index: no entry object kept per node); the
    ``File`` place and the entry are made when asked for (an open, a lookup below). A node
    made from an entry alone (no table) keeps that entry (``_ix`` -1)."""

    __slots__ = ("_src", "_ix")
    kind = "file"            # type: ignore[assignment]
    mode = File.mode         # type: ignore[assignment]
    immutable = True         # type: ignore[assignment]
    target = ""              # type: ignore[assignment]
    st_mode = _FILE_MODE     # type: ignore[assignment]

    def __init__(self, inode: int, version: VersionDir, src: EntryTable | ManifestEntry, mtime: float,
                 ix: int = -1) -> None:
        super().__init__(inode, version, mtime)  # type: ignore[arg-type]
        self._src: Any = src
        self._ix = ix

    @property
    def entry(self) -> ManifestEntry:
        return self._src.entry_at(self._ix) if self._ix >= 0 else self._src  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        """The file's path in its version."""
        return self._src.path_at(self._ix) if self._ix >= 0 else self._src[0]  # type: ignore[no-any-return]

    def holds(self, src: EntryTable | ManifestEntry, ix: int) -> bool:
        """Is this node the file ``ix`` of ``src`` (or the entry ``src``), as given?"""
        return self._src is src and self._ix == ix

    def set_file(self, src: EntryTable | ManifestEntry, ix: int) -> None:
        self._src, self._ix = src, ix

    @property
    def place(self) -> Place:
        v = self._place
        e = self.entry
        return File(v.org, v.reg, v.coll, v.idx, e.parts, entry=e)

    @place.setter
    def place(self, place: Place) -> None:
        assert isinstance(place, File), place
        self.set_file(place.entry, -1)

    @property
    def key(self) -> Key:
        v = self._place
        return ("path", v.org, v.reg, v.coll, v.idx, self.path)

    @property
    def size(self) -> int:  # type: ignore[override]
        return self._src.size_at(self._ix) if self._ix >= 0 else self._src[2]  # type: ignore[no-any-return]


_new_file = object.__new__

Listing = Sequence[tuple[str, Node]]
"""A directory's entries, name -> node, in listing order."""


def inode_for(key: Key) -> int:
    """63-bit hash of the key, never 0 or the root's 1."""
    h = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little")
    return (h & _MASK) | 2


class _VersionFiles:
    """What the files of one version share: the version's place, and the hash state of the
    part of their keys' ``repr`` before the path (``inode_for`` of a file is this state
    updated with ``repr(path) + ")"``, the same number)."""

    __slots__ = ("version", "_prefix")

    def __init__(self, version: VersionDir) -> None:
        self.version = version
        head = repr(("path", version.org, version.reg, version.coll, version.idx, ""))[:-3]
        self._prefix = hashlib.blake2b(head.encode(), digest_size=8)

    def inode_for(self, path: str) -> int:
        h = self._prefix.copy()
        h.update((repr(path) + ")").encode())
        return (int.from_bytes(h.digest(), "little") & _MASK) | 2


LAZY_MIN = 4096
"""A folder of at least this many files keeps the kernel's references to the files listed
from it in arrays (``FolderListing``), not a node each; below it a node each costs little."""

_EAGER = 0xFFFFFFFF   # a lazy folder's child whose inode number another object has: it gets a node


class _LazyIndex:
    """Inode number -> (lazy folder, child) for every file the lazy folders have numbered:
    one open-addressing table for the whole inode table (``(folder << 32) | (child + 1)``
    per slot, at most half full, sized ahead for a folder's children when it is added), so
    a number is found by one probe sequence however many lazy folders there are, and a
    number a file of another folder already has is seen when the second file is numbered."""

    __slots__ = ("folders", "_slots", "_mask", "_room")

    def __init__(self) -> None:
        self.folders: list[FolderListing] = []
        self._slots = array("q", bytes(8 * 16))
        self._mask = 15
        self._room = 0      # every lazy folder's children: each is inserted at most once

    def add(self, folder: "FolderListing") -> int:
        """Register a lazy folder (room made for all its children); its number in the index."""
        self.folders.append(folder)
        self._room += len(folder)
        need = 2 * self._room
        if need > len(self._slots):
            self._grow(1 << need.bit_length())
        return len(self.folders) - 1

    def _grow(self, cap: int) -> None:
        old, self._slots, self._mask = self._slots, array("q", bytes(8 * cap)), cap - 1
        for v in old:
            if v:
                self._put(self.folders[v >> 32]._inodes[(v & 0xFFFFFFFF) - 1], v)

    def _put(self, ino: int, v: int) -> None:
        slots, mask = self._slots, self._mask
        s = ino & mask
        while slots[s]:
            s = (s + 1) & mask
        slots[s] = v

    def insert(self, fno: int, k: int, ino: int) -> None:
        """File ``k`` of folder ``fno`` has the number ``ino`` (``add`` made room for it)."""
        self._put(ino, (fno << 32) | (k + 1))

    def find(self, ino: int) -> "tuple[FolderListing, int] | None":
        """The lazy folder and child numbered ``ino`` (eager children skipped), or None."""
        slots, mask, folders = self._slots, self._mask, self.folders
        s = ino & mask
        while (v := slots[s]):
            f, k = folders[v >> 32], (v & 0xFFFFFFFF) - 1
            if f._inodes[k] == ino and f._counts[k] != _EAGER:  # type: ignore[index]
                return f, k
            s = (s + 1) & mask
        return None


class FolderListing(Sequence[tuple[str, Node]]):
    """A folder inside a version as ``readdir`` hands it out: each child's node is made (or
    found) when its entry is listed, not all at ``opendir``, and the inode numbers found
    are kept (8 bytes a child), so listing the folder again hashes no key. A version's
    folders never change, so the table keeps one per folder for the mount's life.

    A folder of ``LAZY_MIN`` files or more is *lazy*: listing a file makes no node. Its
    inode number (the same hash as its node's would be) goes in ``_inodes``, the kernel's
    references to it in ``_counts``, and the table's ``_LazyIndex`` finds the child again
    from the number when the kernel asks about it (``InodeTable.get``, ``forget``): about
    30 bytes a file, where a node and its slot in the table took about 200. A file's count
    lives in exactly one place: its node once one is made (``materialize`` moves it there),
    the arrays before. A file whose number another object has (a hash collision) is eager:
    it gets a node, made the way a small folder's are."""

    __slots__ = ("_table", "_folder", "_listing", "_files", "_vf", "_prefix", "mtime", "_inodes",
                 "_counts", "_no")

    def __init__(self, table: "InodeTable", folder: InVersion, children: DirListing, mtime: float,
                 lazy: bool = False) -> None:
        self._table = table
        self._folder = folder
        self._listing = children
        self._files = children.table
        self._vf = table.version_files(folder)
        self._prefix = "".join(p + "/" for p in folder.parts)   # a child's path is this + its name
        self.mtime = mtime
        n = len(children)
        self._inodes = array("q", bytes(8 * n))
        self._counts: array[int] | None = array("I", bytes(4 * n)) if lazy else None
        self._no = table.lazy_index.add(self) if lazy else -1

    def __len__(self) -> int:
        return len(self._inodes)

    def __getitem__(self, i: int) -> tuple[str, Node]:  # type: ignore[override]
        """Child ``i`` with its node (made if need be; a lazy file's count moves into it)."""
        ix, name = self._listing.kid(i)
        ino = self._inodes[i]
        lazy = ix >= 0 and self._counts is not None
        if not ino and lazy:
            ino = self._number(i, name)   # numbered (and indexed) before anything is asked of it
        if ino:
            node = self._table.get(ino)
            if node is not None and (node.holds(self._files, ix) if node.__class__ is FileNode else  # type: ignore[attr-defined]
                                     ix < 0):
                return name, node
        if ix >= 0:
            node = self._table.file_node(self._vf, self._files, ix, self._prefix + name, self.mtime)
        else:
            node = self._table.upsert(self._folder.child(name), self.mtime)
        if lazy and node.inode != ino:   # another object has this number: this file keeps a node
            self._unindex(i)
        self._inodes[i] = node.inode
        return name, node

    def child(self, i: int) -> tuple[str, Node | None, int, int]:
        """What ``readdir`` sends of child ``i``: (name, node, inode, size). ``node`` is None
        for a file of a lazy folder that has none; the caller then calls ``hold(i)`` once
        the kernel has the entry (and ``node.lookups += 1`` otherwise)."""
        counts = self._counts
        if counts is not None and counts[i] != _EAGER and not self._table._collided:
            ix, name = self._listing.kid(i)
            if ix >= 0:
                ino = self._inodes[i] or self._number(i, name)
                if counts[i] != _EAGER:
                    node = self._table._by_ino.get(ino)
                    if node is None:
                        return name, None, ino, self._files.size_at(ix)
                    if node.__class__ is FileNode and node.holds(self._files, ix):  # type: ignore[attr-defined]
                        return name, node, ino, node.size
        name, node = self[i]   # a node (a folder, an eager file, or once any key has collided)
        return name, node, node.inode, node.size

    def hold(self, i: int) -> None:
        """The kernel took a reference to lazy child ``i`` (a readdirplus entry)."""
        counts = self._counts
        assert counts is not None
        if not counts[i]:
            self._table.lazy_held += 1
        counts[i] += 1

    # ---- the lazy index ---------------------------------------------------------------
    def _number(self, i: int, name: str) -> int:
        """Child ``i``'s inode number, hashed once and indexed (a number a file of any lazy
        folder has already leaves this one eager: a node of its own)."""
        ino = self._vf.inode_for(self._prefix + name)
        index = self._table.lazy_index
        if index.find(ino) is not None:
            assert self._counts is not None
            self._counts[i] = _EAGER
            return ino
        index.insert(self._no, i, ino)
        self._inodes[i] = ino
        return ino

    def _unindex(self, i: int) -> None:
        """Child ``i`` goes back to an eager node (its number belongs to another object;
        its references are in that node already, moved there by ``materialize``)."""
        assert self._counts is not None
        if self._counts[i] == _EAGER:
            return
        self._table.lazy_held -= self._counts[i] > 0
        self._counts[i] = _EAGER   # the index keeps its slot; ``find`` skips an eager child

    def drop(self, k: int, n: int) -> None:
        """The kernel forgot ``n`` references to lazy child ``k``."""
        counts = self._counts
        assert counts is not None
        if counts[k]:
            counts[k] = max(0, counts[k] - n)
            if not counts[k]:
                self._table.lazy_held -= 1

    def held(self, k: int) -> bool:
        return bool(self._counts[k])  # type: ignore[index]

    def materialize(self, k: int) -> FileNode:
        """Lazy child ``k``'s node, made now, taking the kernel's references to it."""
        counts = self._counts
        assert counts is not None
        ix = self._listing.index_at(k)
        node = FileNode(self._inodes[k], self._vf.version, self._files, self.mtime, ix)
        node.lookups = counts[k]
        if counts[k]:
            self._table.lazy_held -= 1
        counts[k] = 0
        return node


class InodeTable:
    def __init__(self, lazy_min: int = LAZY_MIN) -> None:
        """``lazy_min``: the folder size from which listed files get no node (``LAZY_MIN``)."""
        self.lazy_min = lazy_min
        self._by_ino: dict[int, Node] = {}
        self._folders: dict[tuple[str, str, str, int, tuple[str, ...]], FolderListing] = {}
        self._collided: dict[Key, Node] = {}      # keys whose hash was taken by another key
        self._versions: dict[tuple[str, str, str, int], _VersionFiles] = {}
        self.lazy_index = _LazyIndex()            # the lazy folders' files (FolderListing's doc)
        self._collisions = 0
        self.lazy_held = 0                        # files the kernel holds that have no node

    def __len__(self) -> int:
        """Inodes the kernel may hold: the nodes, and the files of lazy folders it holds."""
        return len(self._by_ino) + self.lazy_held

    def counts(self) -> dict[str, int]:
        """For ``wandbfs status``: the inodes the kernel may hold, and how many have a node
        object (the rest are lazy folders' files)."""
        return {"inodes": len(self), "inode_nodes": len(self._by_ino)}

    def add_root(self, mtime: float = 0.0) -> Node:
        node = Node(inode=ROOT_INODE, place=Root(), mtime=mtime)
        self._by_ino[ROOT_INODE] = node
        return node

    def get(self, inode: int) -> Node | None:
        """The node of ``inode``; a file of a lazy folder the kernel holds gets one now."""
        node = self._by_ino.get(inode)
        if node is None and self.lazy_index.folders:
            node = self._materialize(inode, held_only=True)
        return node

    def _at(self, inode: int) -> Node | None:
        """The node numbered ``inode``, made now if it is a lazy folder's file (a lookup)."""
        node = self._by_ino.get(inode)
        if node is None and self.lazy_index.folders:
            node = self._materialize(inode, held_only=False)
        return node

    def _materialize(self, inode: int, held_only: bool) -> Node | None:
        """A node for the lazy folders' file ``inode`` (``held_only``: only if the kernel
        holds it; a lookup makes one either way)."""
        found = self.lazy_index.find(inode)
        if found is None or (held_only and not found[0].held(found[1])):
            return None
        node = self._by_ino[inode] = found[0].materialize(found[1])
        return node

    def nodes(self) -> list[Node]:
        """Every node the kernel may hold (a copy: refresh walks it while lookups go on)."""
        return list(self._by_ino.values())

    def by_key(self, key: Key) -> Node | None:
        if key == ("root",):
            return self._by_ino.get(ROOT_INODE)
        node = self.get(inode_for(key))
        if node is not None and node.key == key:
            return node
        return self._collided.get(key)

    def version_files(self, folder: InVersion) -> _VersionFiles:
        """What the files of ``folder``'s version share (their inode numbers' hash prefix)."""
        return self._version(folder.org, folder.reg, folder.coll, folder.idx)

    def _version(self, org: str, reg: str, coll: str, idx: int) -> _VersionFiles:
        vk = (org, reg, coll, idx)
        vf = self._versions.get(vk)
        if vf is None:
            vf = self._versions[vk] = _VersionFiles(VersionDir(org, reg, coll, idx))
        return vf

    def folder(self, folder: InVersion, children: DirListing, mtime: float) -> FolderListing:
        """The listing of a folder inside a version (its nodes made as they are listed)."""
        key = (folder.org, folder.reg, folder.coll, folder.idx, folder.parts)
        listing = self._folders.get(key)
        if listing is None:
            lazy = len(children) >= self.lazy_min
            listing = self._folders[key] = FolderListing(self, folder, children, mtime, lazy)
        return listing

    def upsert(self, place: Place, mtime: float) -> Node:
        """Return the node for ``place``'s key, creating it or refreshing what it is (an
        alias that moved) and its mtime; its counts stay."""
        if isinstance(place, File) and place.entry.path == "/".join(place.parts):
            return self.upsert_file(place, place.entry, mtime)
        key = place.key
        if key == ("root",):
            node = self._by_ino[ROOT_INODE]
            node.place, node.mtime = place, mtime
            return node
        return self._upsert(key, inode_for(key), mtime, lambda ino: Node(inode=ino, place=place, mtime=mtime),
                            place)

    def upsert_file(self, version: VersionDir | File, src: EntryTable | ManifestEntry, mtime: float,
                    ix: int = -1) -> Node:
        """The node of the file ``ix`` of the table ``src`` (or of the entry ``src``, ``ix``
        -1) of ``version`` (a place inside it): ``upsert`` of its ``File`` place, without
        building one."""
        path = src.path_at(ix) if ix >= 0 else src[0]  # type: ignore[union-attr,index]
        return self.file_node(self._version(version.org, version.reg, version.coll, version.idx), src, ix, path,
                              mtime)

    def file_node(self, vf: _VersionFiles, src: EntryTable | ManifestEntry, ix: int, path: str,
                  mtime: float) -> Node:
        """``upsert_file`` with the version's shared part and the path at hand: listing a
        folder calls this per file."""
        ino = vf.inode_for(path)
        if self._collided:   # a key whose hash was taken keeps the number it was given
            v = vf.version
            node = self._collided.get(("path", v.org, v.reg, v.coll, v.idx, path))
            if node is not None:
                node.set_file(src, ix)  # type: ignore[attr-defined]
                node.mtime = mtime
                return node
        node = self._at(ino)
        if node is None and not self._collided:
            node = self._by_ino[ino] = _new_file(FileNode)
            node.inode, node._place, node._src, node._ix, node.mtime = ino, vf.version, src, ix, mtime
            node.lookups = node.open_handles = 0
            return node
        if node is not None and node.__class__ is FileNode and node._place is vf.version \
                and node.path == path:  # type: ignore[attr-defined]
            node.set_file(src, ix)  # type: ignore[attr-defined]
            node.mtime = mtime
            return node
        v = vf.version
        key = ("path", v.org, v.reg, v.coll, v.idx, path)
        return self._upsert(key, ino, mtime, lambda i: FileNode(i, v, src, mtime, ix), None, (src, ix))

    def _upsert(self, key: Key, ino: int, mtime: float, make: Any, place: Place | None,
                file: tuple[EntryTable | ManifestEntry, int] | None = None) -> Node:
        node = self._at(ino)
        if node is not None and node.key == key:
            pass
        elif (node := self._collided.get(key)) is None:
            collided = False
            while ino in self._by_ino:
                self._collisions += 1
                collided = True
                ino = inode_for(key + (self._collisions,))
            node = make(ino)
            self._by_ino[ino] = node
            if collided:
                self._collided[key] = node
            return node
        if file is not None:
            node.set_file(*file)  # type: ignore[attr-defined]
        elif place is not None:
            node.place = place
        node.mtime = mtime
        return node

    def incref(self, node: Node, n: int = 1) -> None:
        node.lookups += n

    def forget(self, inode: int, n: int) -> None:
        """The kernel dropped ``n`` references; a node nobody references is freed."""
        node = self._by_ino.get(inode)
        if node is None:
            found = self.lazy_index.find(inode) if self.lazy_index.folders else None
            if found is not None:
                found[0].drop(found[1], n)
            return
        node.lookups = max(0, node.lookups - n)
        if node.lookups == 0 and not node.pinned and not node.open_handles:
            del self._by_ino[inode]
            if self._collided:
                self._collided.pop(node.key, None)
