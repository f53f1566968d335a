"""The inode table: a stable inode number per filesystem object, with kernel lookup counts.

Keys name objects by what they are, not by path: ``("ver", org, reg, coll, 3)`` for the
version dir ``v3``, ``("path", org, reg, coll, 3, "a/b.txt")`` for a file in it. The inode
number is a hash of the key, so the same (version, path) gets the same inode in every
mount and after remounts, which keeps tools that compare ``st_ino`` (tar, rsync, find
-samefile) honest. Entries live while the kernel holds a lookup reference (pyfuse3's
``forget``) or the filesystem pins them (the root).
"""

from __future__ import annotations

import hashlib
import stat as statmod
from dataclasses import dataclass, field
from typing import Any, Hashable

ROOT_INODE = 1  # pyfuse3.ROOT_INODE

Key = tuple[Hashable, ...]


@dataclass
class Node:
    """What the filesystem knows about one inode; ``kind`` is "dir", "file" or "symlink"."""

    inode: int
    key: Key
    kind: str
    mode: int
    size: int = 0
    mtime: float = 0.0
    target: str = ""                 # symlinks
    immutable: bool = False          # inside a version: contents never change
    data: dict[str, Any] = field(default_factory=dict)
    lookups: int = 0
    pinned: bool = False

    @property
    def st_mode(self) -> int:
        kind = {"dir": statmod.S_IFDIR, "file": statmod.S_IFREG, "symlink": statmod.S_IFLNK}[self.kind]
        return kind | self.mode


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

    def add_root(self, node_kwargs: dict[str, Any]) -> Node:
        node = Node(inode=ROOT_INODE, key=("root",), pinned=True, **node_kwargs)
        self._by_ino[ROOT_INODE] = node
        self._by_key[node.key] = node
        return node

    def get(self, inode: int) -> Node | None:
        return self._by_ino.get(inode)

    def by_key(self, key: Key) -> Node | None:
        return self._by_key.get(key)

    def upsert(self, key: Key, **attrs: Any) -> Node:
        """Return the node for ``key``, creating it or refreshing its mutable attributes."""
        node = self._by_key.get(key)
        if node is not None:
            for k, v in attrs.items():
                setattr(node, k, v)
            return node
        ino = inode_for(key)
        while ino in self._by_ino and self._by_ino[ino].key != key:
            self._collisions += 1
            ino = inode_for(key + (self._collisions,))
        node = Node(inode=ino, key=key, **attrs)
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
        if node.lookups == 0 and not node.pinned and not node.data.get("open_handles"):
            del self._by_ino[inode]
            self._by_key.pop(node.key, None)
