"""The inode table: a stable inode number per filesystem object, with kernel lookup counts.

Each inode is a typed node (``nodes.py``: ``Org``, ``VersionDir``, ``File``, ...) whose key
names the object by what it is, not by path: ``("ver", org, reg, coll, 3)`` for the
version dir ``v3``, ``("path", org, reg, coll, 3, "a/b.txt")`` for a file in it. The inode
number is a hash of the key, so the same (version, path) gets the same inode in every
mount and after remounts, which keeps tools that compare ``st_ino`` (tar, rsync, find
-samefile) honest. Entries live while the kernel holds a lookup reference (pyfuse3's
``forget``), a file handle has them open, or the filesystem pins them (the root).
"""

from __future__ import annotations

import hashlib
import stat as statmod
from dataclasses import dataclass

from wandbfs.fuse.nodes import AliasLink, File, Key, Place, RegistryPrefixLink, Root

ROOT_INODE = 1  # pyfuse3.ROOT_INODE

_S_IFMT = {"dir": statmod.S_IFDIR, "file": statmod.S_IFREG, "symlink": statmod.S_IFLNK}


@dataclass
class Node:
    """One inode: what it is (``place``), and the counts that keep it alive."""

    inode: int
    place: Place
    mtime: float = 0.0
    lookups: int = 0                 # the kernel's references (lookup, readdir; minus forget)
    open_handles: int = 0            # open file handles on it (handles.py)
    pinned: bool = False

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
        """A symlink's target ("" for anything else)."""
        return self.place.target if isinstance(self.place, (AliasLink, RegistryPrefixLink)) else ""

    @property
    def st_mode(self) -> int:
        return _S_IFMT[self.kind] | self.mode


Listing = list[tuple[str, Node]]
"""A directory's entries, name -> node, in listing order."""


def inode_for(key: Key) -> int:
    """63-bit hash of the key, never 0 or the root's 1."""
    h = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little")
    return (h & ((1 << 63) - 1)) | 2


class InodeTable:
    def __init__(self) -> None:
        self._by_ino: dict[int, Node] = {}
        self._by_key: dict[Key, Node] = {}
        self._collisions = 0

    def __len__(self) -> int:
        return len(self._by_ino)

    def add_root(self, mtime: float = 0.0) -> Node:
        node = Node(inode=ROOT_INODE, place=Root(), mtime=mtime, pinned=True)
        self._by_ino[ROOT_INODE] = node
        self._by_key[node.key] = node
        return node

    def get(self, inode: int) -> Node | None:
        return self._by_ino.get(inode)

    def by_key(self, key: Key) -> Node | None:
        return self._by_key.get(key)

    def upsert(self, place: Place, mtime: float) -> Node:
        """Return the node for ``place``'s key, creating it or refreshing what it is (an
        alias that moved) and its mtime; its counts stay."""
        key = place.key
        node = self._by_key.get(key)
        if node is not None:
            node.place, node.mtime = place, mtime
            return node
        ino = inode_for(key)
        while ino in self._by_ino and self._by_ino[ino].key != key:
            self._collisions += 1
            ino = inode_for(key + (self._collisions,))
        node = Node(inode=ino, place=place, mtime=mtime)
        self._by_ino[ino] = node
        self._by_key[key] = node
        return node

    def incref(self, node: Node, n: int = 1) -> None:
        node.lookups += n

    def forget(self, inode: int, n: int) -> None:
        """The kernel dropped ``n`` references; a node nobody references is freed."""
        node = self._by_ino.get(inode)
        if node is None:
            return
        node.lookups = max(0, node.lookups - n)
        if node.lookups == 0 and not node.pinned and not node.open_handles:
            del self._by_ino[inode]
            self._by_key.pop(node.key, None)
