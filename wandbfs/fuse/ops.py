"""FUSE glue: pyfuse3 request handlers that translate between the kernel and the parts below.

The tree is ``/<org>/<registry>/<collection>/{vN dirs, alias symlinks}/<files>``. Handlers
only translate: which node a name finds comes from the tree (tree.py, over the catalog),
bytes from an ``ObjectReader`` (fill/reader.py), attributes from xattrs.py, the likely-next
fetches from warmups.py, what lineage records from uses.py. Under a ``vN`` all is immutable (day-long
kernel timeouts, ``keep_cache``); listings, aliases and ``vN`` names (deletable) get the user's TTLs.

Every handler goes through ``_guard``: pyfuse3 tears the mount down on any exception that
is not a ``FUSEError``, so errors are mapped to errnos (errors.py's one table) and never escape.
"""

from __future__ import annotations

import collections
import errno
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import pyfuse3
import trio

from wandbfs.catalog.catalog import Catalog
from wandbfs.fill.errors import BadBytes, RefChanged
from wandbfs.fill.fetcher import Fetcher
from wandbfs.fill.reader import ObjectReader, ReadCounters
from wandbfs.fuse.errors import UNEXPECTED, errno_of, outcome_of
from wandbfs.fuse.handles import Handles
from wandbfs.fuse.inodes import ROOT_INODE, FileNode, InodeTable, Node
from wandbfs.fuse.listing import BLKSIZE, IMMUTABLE_TTL, cache_statvfs, disk_figures, file_attrs, reply_entries
from wandbfs.fuse.misses import Misses
from wandbfs.fuse.nodes import AliasLink, File, VersionDir
from wandbfs.fuse.tree import Tree
from wandbfs.fuse.uses import Uses
from wandbfs.fuse.warmups import Warmups
from wandbfs.fuse.xattrs import PREFIXES, Xattrs
from wandbfs.lineage.access_log import AccessLog
from wandbfs.lineage.queue import Lineage
from wandbfs.sdk.client import NotFound

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _guard(fn: F) -> F:
    """Map every failure to an errno; log what the table says to. Never let one escape."""

    @functools.wraps(fn)
    async def wrapper(self: "WandbFS", *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError as e:
            if e.errno not in (errno.ENOENT, errno.ENODATA, errno.ENOSYS):  # normal answers, not failures
                self.errors[errno.errorcode.get(e.errno, str(e.errno))] += 1
            raise
        except Exception as e:  # noqa: BLE001 - the catch-all the mount's survival depends on
            raise pyfuse3.FUSEError(self._failed(fn.__name__, args, e)) from None
    return wrapper  # type: ignore[return-value]


def _erofs(name: str) -> Callable[..., Awaitable[Any]]:
    async def refuse(self: "WandbFS", *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)
    refuse.__name__ = name
    return refuse


@dataclass
class FsOptions:
    alias_ttl: float = 30.0
    list_ttl: float = 60.0
    negative_ttl: float = 30.0
    uid: int = 0
    gid: int = 0
    verify: str = "stream"   # "stream": serve ranges as they arrive; "strict": only verified objects
    warm: bool = True        # fetch likely-next manifests, URLs and small files in the background
    reader_runs: bool = True  # record a use on the reading process's run (WANDB_RUN_ID) when it has one
    xattrs: bool = False     # serve user.wandb.* (costs `ls -l` two FUSE requests per file; info/status use the socket)
    cache_dir: str | None = None  # `df MNT` shows this directory's disk
    link_root: str | None = None  # links absolute under this (the mount point: `cp -r` of an alias keeps a working link); None: relative


class WandbFS(pyfuse3.Operations):
    def __init__(self, catalog: Catalog, fetcher: Fetcher, lineage: Lineage | None,
                 options: FsOptions | None = None, *, access_log: AccessLog | None = None,
                 metrics: Any = None, nursery: trio.Nursery | None = None) -> None:
        """``metrics``: the mount's ``daemon.metrics.Metrics``, if it serves them; ``nursery``:
        where background work runs (fills, warm-ups, invalidations; none runs without one)."""
        super().__init__()
        self.catalog = catalog
        self.fetcher = fetcher
        self.lineage = lineage
        self.metrics = metrics
        self.opts = options or FsOptions(uid=os.getuid(), gid=os.getgid())
        self.table = InodeTable()
        self.table.add_root(time.time())
        self._disk: os.statvfs_result | None = None   # the cache disk's last figures (statfs)
        self.warmups = Warmups(catalog, fetcher, enabled=self.opts.warm, nursery=nursery)
        self.tree = Tree(catalog, self.table, self.warmups)
        self.xattrs = Xattrs(catalog, self.tree, self.status)
        self.handles = Handles()
        self.misses = Misses()       # negative entries the kernel caches, for refresh
        self.uses = Uses(lineage, access_log, reader_runs=self.opts.reader_runs)   # lineage, access log
        self.nursery = nursery
        self.read_calls = 0
        self.read_bytes = 0
        self.counters = ReadCounters()  # opens hit/missed, bytes from the cache/W&B (the readers count)
        self.errors: collections.Counter[str] = collections.Counter()
        self.started = time.time()

    def _failed(self, handler: str, args: tuple[Any, ...], e: Exception) -> int:
        """The errno for ``e``, logged and counted as the table says (from inside ``except``)."""
        outcome = outcome_of(e)
        if outcome is UNEXPECTED:
            log.exception("unexpected error in %s%r", handler, args[:2])
        elif outcome.level is not None:
            log.log(outcome.level, "%s: %s%s", handler, outcome.says, e)
        if outcome.counted:
            self.errors[errno.errorcode[outcome.errno]] += 1
        return outcome.errno

    # ---- attributes ------------------------------------------------------------------
    def _ttl(self, node: Node) -> float:
        if node.immutable:
            return IMMUTABLE_TTL
        if node.kind == "symlink":
            return self.opts.alias_ttl
        return self.opts.list_ttl

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        if node.__class__ is FileNode:
            return file_attrs(node.inode, node.size, node.mtime, self.opts.uid, self.opts.gid)
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.generation = 0
        a.entry_timeout = a.attr_timeout = self._ttl(node)
        if isinstance(node.place, VersionDir):   # contents immutable, existence not (deleted on W&B)
            a.entry_timeout = self.opts.list_ttl
        a.st_mode = node.st_mode
        a.st_nlink = 2 if node.kind == "dir" else 1
        a.st_uid, a.st_gid = self.opts.uid, self.opts.gid
        a.st_size = len(os.fsencode(node.target_at(self.opts.link_root))) if node.kind == "symlink" else node.size
        a.st_blksize = BLKSIZE
        a.st_blocks = (a.st_size + 511) // 512
        ns = int(node.mtime * 1e9)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = ns
        return a

    def _negative(self, immutable: bool) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = 0
        a.entry_timeout = IMMUTABLE_TTL if immutable else self.opts.negative_ttl
        return a

    def _node(self, inode: int) -> Node:
        node = self.table.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    async def refresh(self, prefix: tuple[str, ...] = ()) -> int:
        """Reload listing and alias caches under ``prefix`` (all if empty), and drop the kernel's
        cached misses there and its entries W&B no longer has: created and deleted show at once."""
        n = await self.catalog.refresh(prefix)
        stale = [*self.misses.take(lambda inode: self._under(inode, prefix)),
                 *((parent, os.fsencode(name)) for parent, name in self.tree.gone(prefix))]
        for inode, name in stale:
            try:
                await trio.to_thread.run_sync(pyfuse3.invalidate_entry, inode, name)
            except OSError as e:  # ENOENT: the kernel had already dropped it
                log.debug("invalidate_entry(%d, %r): %s", inode, name, e)
        return n

    def _under(self, inode: int, prefix: tuple[str, ...]) -> bool:
        """Whether the directory ``inode`` lies under (or above) ``prefix``; a freed one may."""
        node = self.table.get(inode)
        if node is None:
            return True
        scope = node.place.scope
        return scope[:len(prefix)] == prefix[:len(scope)]

    # ---- handlers --------------------------------------------------------------------
    @_guard
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        sname = os.fsdecode(name)
        try:
            node = parent if sname == "." else await self.tree.child(parent, sname)
        except NotFound:
            node = None
        if node is None:
            if not parent.immutable:
                self.misses.remember(parent.inode, name)
            return self._negative(parent.immutable)
        self.table.incref(node)
        return self.attrs(node)

    @_guard
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if isinstance(node.place, AliasLink):
            await self.tree.refresh_alias(node)
        return self.attrs(node)

    @_guard
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.table.get(inode)
        if node is None or node.kind != "symlink":
            raise pyfuse3.FUSEError(errno.EINVAL)
        if isinstance(node.place, AliasLink):
            await self.tree.refresh_alias(node)
            # Remember which alias this process came through, for the lineage record.
            self.uses.via.note(ctx.pid, node.place.version_key, node.place.alias)
        return os.fsencode(node.target_at(self.opts.link_root))

    def forget(self, inode_list: list[tuple[int, int]]) -> None:
        try:
            for inode, n in inode_list:
                self.table.forget(inode, n)
        except Exception:  # noqa: BLE001 - forget must never raise
            log.exception("forget failed")

    @_guard
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if node.kind != "dir":
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return self.handles.open_dir(await self.tree.children(node))

    @_guard
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # a version's folder makes its nodes as they are listed (inodes.FolderListing)
        reply_entries(token, self.handles.listing(fh), start_id, self.attrs, self.opts.uid, self.opts.gid)

    @_guard
    async def releasedir(self, fh: int) -> None:
        self.handles.release_dir(fh)

    @_guard
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self._node(inode)
        place = node.place
        if not isinstance(place, File):
            raise pyfuse3.FUSEError(errno.EISDIR)
        detail = await self.tree.detail(node)
        latency = self.metrics.read_latency.observe if self.metrics is not None else None
        reader = ObjectReader(self.fetcher, detail, place.entry, strict=self.opts.verify == "strict",
                              counters=self.counters, latency=latency)
        fh = self.handles.open_file(node, reader)
        self.uses.opened(place, detail, ctx.pid, ctx.uid)
        if self.nursery is not None:
            self.nursery.start_soon(reader.start)  # hold a cached object now, or start its fill
            self.warmups.file_opened(detail, place.entry, reader)
        # keep_cache only for verified bytes. Streaming serves pages before the digest is
        # known; a reader may stop early, or the digest may fail: an open of an object not
        # (yet) verified is made without keep_cache, so the kernel drops whatever pages it
        # holds for the file before this handle reads, and unverified bytes never outlive
        # the handles that were served them. Re-opens of cached files keep their pages.
        keep = self.opts.verify == "strict" or self.fetcher.is_verified(place.entry)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=False)

    @_guard
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles.file(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if h.reader.failed is not None:  # the kernel retries a failed page read at once: no refetch
            raise pyfuse3.FUSEError(errno_of(h.reader.failed))
        self.read_calls += 1
        self.read_bytes += size
        try:
            data = await h.reader.read(off, size)
        except (BadBytes, RefChanged):  # pages already handed out may be wrong
            self._drop_page_cache(h.node)
            raise
        if h.reader.tail_unverified:   # a probe of the end, before the digest: not kept by the kernel,
            h.reader.tail_unverified = False   # so the page another reader's EOF read gets is verified
            self._drop_page_cache(h.node)
        return data

    def _drop_page_cache(self, node: Node) -> None:
        """Pages of a file whose digest failed may sit in the kernel cache: drop them.

        Not from inside this read (the kernel holds the page lock: invalidating now would
        deadlock), so in the background; and because the next open may come first, that
        open is made without ``keep_cache`` (the object is not verified), which has the
        kernel drop the pages itself."""
        if self.nursery is not None:
            self.nursery.start_soon(self._invalidate, node.inode)

    async def _invalidate(self, inode: int) -> None:
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, False)
        except OSError as e:
            log.debug("invalidate_inode(%d): %s", inode, e)

    @_guard
    async def release(self, fh: int) -> None:
        h = self.handles.release_file(fh)
        if h is None:
            return
        log.debug("release %s: %d reads, %d bytes requested so far", h.reader.entry.path, self.read_calls,
                  self.read_bytes)
        h.reader.close()

    @_guard
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLKSIZE
        s.f_namemax = 255
        s.f_files = len(self.table)
        if (disk := await self._cache_disk()) is not None:
            disk_figures(s, disk)
        return s

    async def _cache_disk(self) -> os.statvfs_result | None:
        """The cache disk's figures, asked in a thread for at most 2 s (a hung disk must not
        hang `df`); the last good ones after that."""
        if self.opts.cache_dir is None:
            return None
        with trio.move_on_after(2.0):
            try:
                self._disk = await trio.to_thread.run_sync(cache_statvfs, self.opts.cache_dir, abandon_on_cancel=True)
            except OSError as e:
                log.debug("statfs of the cache dir: %s", e)
        return self._disk

    @_guard
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        return not (mode & os.W_OK)

    # ---- extended attributes (xattrs.py says what they are) ----------------------------
    @_guard
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not self.opts.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # the kernel then stops asking for good
        sname = os.fsdecode(name)
        node = self.table.get(inode)
        # Cheap refusal first: `ls -l` asks for security/ACL names on every file.
        if node is None or not sname.startswith(PREFIXES):
            raise pyfuse3.FUSEError(errno.ENODATA)
        value = (await self.xattrs.of(node)).get(sname)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value

    @_guard
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if not self.opts.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return [os.fsencode(k) for k in await self.xattrs.of(self._node(inode))]

    def status(self) -> dict[str, Any]:
        """What ``wandbfs status`` shows: one snapshot of the counters of every part."""
        st = self.fetcher.stats
        ev = self.fetcher.evictor
        lin = self.lineage.stats if self.lineage else None
        c = self.counters
        hits, misses = c.opens_hit, c.opens_missed
        return {
            "pid": os.getpid(), "uptime_s": round(time.time() - self.started, 1),
            "cache_hits": hits, "cache_misses": misses,
            "cache_hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "bytes_read": c.bytes_from_cache + c.bytes_from_wandb,
            "bytes_from_cache": c.bytes_from_cache, "bytes_from_wandb": c.bytes_from_wandb,
            "bytes_downloaded": st.bytes_downloaded, "downloads": st.downloads,
            "downloads_in_flight": st.in_flight, "uncached_files": st.uncached,
            "retries": st.retries, "digest_failures": st.digest_failures,
            "evictions": ev.evictions, "bytes_evicted": ev.bytes_evicted,
            "wandb_calls": self.catalog.sdk_calls,
            "wandb_offline_since_s": (None if self.catalog.offline_since is None
                                      else round(trio.current_time() - self.catalog.offline_since, 1)),
            "lineage_recorded": lin.recorded if lin else None, "lineage_pending": lin.pending if lin else None,
            "errors": dict(self.errors), "open_files": self.handles.open_files, **self.table.counts(),
            **self.fetcher.tier_status(),
        }

    # Every way of changing the tree is refused: the Registry is read through, never written.
    setattr = _erofs("setattr")
    mknod = _erofs("mknod")
    mkdir = _erofs("mkdir")
    unlink = _erofs("unlink")
    rmdir = _erofs("rmdir")
    symlink = _erofs("symlink")
    rename = _erofs("rename")
    link = _erofs("link")
    create = _erofs("create")
    write = _erofs("write")
    setxattr = _erofs("setxattr")
    removexattr = _erofs("removexattr")


__all__ = ["WandbFS", "FsOptions", "ROOT_INODE"]
