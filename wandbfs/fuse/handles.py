"""Open file and directory handles: the numbers the kernel passes back to read and release.

A file handle is a node and its ``ObjectReader`` (which owns everything the open holds on
the object); while one is open the node counts it (``Node.open_handles``), so the inode
table keeps the node even after the kernel forgets it. A directory handle is the listing
taken at ``opendir``, so a ``readdir`` in several calls sees one consistent listing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from wandbfs.fill.reader import ObjectReader
from wandbfs.fuse.inodes import Listing, Node

__all__ = ["Handle", "Handles"]


@dataclass
class Handle:
    node: Node
    reader: ObjectReader          # owns everything the open holds on the object (reader.py)


class Handles:
    """File and directory handles, numbered from one counter."""

    def __init__(self) -> None:
        self._fh = itertools.count(1)
        self._files: dict[int, Handle] = {}
        self._dirs: dict[int, Listing] = {}

    @property
    def open_files(self) -> int:
        return len(self._files)

    def open_file(self, node: Node, reader: ObjectReader) -> int:
        fh = next(self._fh)
        self._files[fh] = Handle(node, reader)
        node.open_handles += 1
        return fh

    def file(self, fh: int) -> Handle | None:
        return self._files.get(fh)

    def release_file(self, fh: int) -> Handle | None:
        """Forget the handle (the caller closes its reader); None if it was not open."""
        h = self._files.pop(fh, None)
        if h is not None:
            h.node.open_handles = max(0, h.node.open_handles - 1)
        return h

    def open_dir(self, listing: Listing) -> int:
        fh = next(self._fh)
        self._dirs[fh] = listing
        return fh

    def listing(self, fh: int) -> Listing:
        return self._dirs.get(fh, [])

    def release_dir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
