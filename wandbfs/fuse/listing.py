"""Directory entries handed to the kernel: ``readdir`` replies and a file's attributes.

Listing a version's folder of 200,000 files makes 200,000 replies, each with the entry's
attributes (``readdirplus``), so this is the hot path of ``ls``: a file's attributes are set
field by field once (``file_attrs``), and a ``readdir`` call fills one attributes object for
all the files it replies with (the reply copies it), changing only what differs.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import pyfuse3

from wandbfs.fuse.inodes import FileNode, FolderListing, Node

__all__ = ["IMMUTABLE_TTL", "BLKSIZE", "cache_statvfs", "disk_figures", "file_attrs", "reply_entries"]

IMMUTABLE_TTL = 24 * 3600.0
BLKSIZE = 1 << 20


def file_attrs(inode: int, size: int, mtime: float, uid: int, gid: int) -> pyfuse3.EntryAttributes:
    """What ``WandbFS.attrs`` says of a file inside a version, each field set once."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = inode
    a.entry_timeout = a.attr_timeout = IMMUTABLE_TTL
    a.st_mode = FileNode.st_mode
    a.st_nlink = 1
    a.st_uid, a.st_gid = uid, gid
    a.st_size = size
    a.st_blksize = BLKSIZE
    a.st_blocks = (size + 511) // 512
    a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = int(mtime * 1e9)
    return a


def reply_entries(token: pyfuse3.ReaddirToken, entries: Sequence[tuple[str, Node]], start: int,
                  attrs: Callable[[Node], pyfuse3.EntryAttributes], uid: int, gid: int) -> None:
    """Reply with ``entries[start:]`` until the kernel's buffer is full (O(entries sent):
    the kernel asks again from the offset it got to); each entry sent counts as a lookup,
    in its node or, for a lazy folder's file that has none, in the folder's arrays."""
    reply, fsencode = pyfuse3.readdir_reply, os.fsencode
    folder = entries if entries.__class__ is FolderListing else None
    files: pyfuse3.EntryAttributes | None = None
    mtime = None
    for i in range(start, len(entries)):
        if folder is not None:
            name, node, ino, size = folder.child(i)   # type: ignore[attr-defined]
        else:
            name, node = entries[i]
            ino, size = node.inode, node.size
        if node is None or node.__class__ is FileNode:
            t = folder.mtime if node is None else node.mtime   # type: ignore[union-attr]
            if files is None:
                files, mtime = file_attrs(ino, size, t, uid, gid), t
            a = files
            a.st_ino = ino
            a.st_size = size
            a.st_blocks = (size + 511) // 512
            if t != mtime:
                mtime = t
                a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = int(t * 1e9)
        else:
            a = attrs(node)
        if not reply(token, fsencode(name), a, i + 1):
            return
        if node is None:
            folder.hold(i)   # type: ignore[union-attr]  # the kernel holds this entry now
        else:
            node.lookups += 1   # (InodeTable.incref)


def disk_figures(s: "pyfuse3.StatvfsData", disk: os.statvfs_result, bsize: int = BLKSIZE) -> None:
    """``df`` of the mount shows the local cache's disk (as other network filesystems show
    their cache or server): its blocks rescaled to the mount's ``bsize``, its inodes."""
    frsize = disk.f_frsize or disk.f_bsize or bsize
    s.f_bsize = s.f_frsize = bsize
    s.f_blocks = disk.f_blocks * frsize // bsize
    s.f_bfree = disk.f_bfree * frsize // bsize
    s.f_bavail = disk.f_bavail * frsize // bsize
    s.f_files, s.f_ffree, s.f_favail = disk.f_files, disk.f_ffree, disk.f_favail


def cache_statvfs(path: str) -> os.statvfs_result:
    """``statvfs`` of the cache dir, or of its nearest existing parent (the cache dir is made
    on the first download: the disk it will be on is the same)."""
    while True:
        try:
            return os.statvfs(path)
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                raise
            path = parent
