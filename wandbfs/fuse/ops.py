"""FUSE glue: pyfuse3 request handlers over the catalog, the inode table and the fetcher.

The tree is ``/<org>/<registry>/<collection>/{vN dirs, alias symlinks}/<files>``. Handlers
stay short: name resolution lives in the catalog, bytes in the fetcher, lineage in its own
queue. Everything under a ``vN`` directory is immutable, so it gets day-long kernel timeouts
and ``keep_cache``; listings and aliases get the short TTLs the user configured.

Every handler goes through ``_guard``: pyfuse3 tears the mount down on any exception that
is not a ``FUSEError``, so errors are mapped to errnos here and never escape.
"""

from __future__ import annotations

import collections
import errno
import functools
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import pyfuse3
import trio

from wandbfs.catalog.catalog import Catalog
from wandbfs.fill.fetcher import BadBytes, Fetcher
from wandbfs.fuse.inodes import ROOT_INODE, InodeTable, Node
from wandbfs.lineage.access_log import AccessLog
from wandbfs.lineage.queue import MOUNT_RUN, Lineage, Use
from wandbfs.model.manifest import DIR, ManifestEntry
from wandbfs.model.names import REGISTRY_PREFIX, parse_version_token, qualified_name, split_qualified
from wandbfs.fill.reader import ObjectReader, ReadCounters
from wandbfs.lineage.readers import ReaderInfo
from wandbfs.fill.refs import RefChanged
from wandbfs.sdk.client import AuthError, BackendError, NotFound, VersionDetail

log = logging.getLogger(__name__)

IMMUTABLE_TTL = 24 * 3600.0
BLKSIZE = 1 << 20
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _guard(fn: F) -> F:
    """Map every failure to an errno; log what was unexpected. Never let one escape."""
    from wandbfs.fill.refs import RefDenied, Unsupported  # reference entries (refs.py)

    @functools.wraps(fn)
    async def wrapper(self: "WandbFS", *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError as e:
            if e.errno not in (errno.ENOENT, errno.ENODATA, errno.ENOSYS):  # normal answers, not failures
                self.errors[errno.errorcode.get(e.errno, str(e.errno))] += 1
            raise
        except NotFound:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except Unsupported as e:  # a reference wandbfs cannot read: the message names it and what can
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP) from None
        except RefDenied as e:  # the reference's own storage refused us, not W&B
            log.error("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(errno.EACCES) from None
        except AuthError as e:
            log.error("%s: W&B refused the credentials: %s", fn.__name__, e)
            self.errors["EACCES"] += 1
            raise pyfuse3.FUSEError(errno.EACCES) from None
        except BackendError as e:
            log.error("%s: %s", fn.__name__, e)
            self.errors["EIO"] += 1
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:  # noqa: BLE001 - the catch-all the mount's survival depends on
            log.exception("unexpected error in %s%r", fn.__name__, args[:2])
            self.errors["EIO"] += 1
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper  # type: ignore[return-value]


def _errno_of(error: BaseException) -> int:
    """The errno a reader's sticky failure answers with (as ``_guard`` mapped it the first time)."""
    if isinstance(error, NotFound):
        return errno.ENOENT
    return errno.EACCES if isinstance(error, AuthError) else errno.EIO


def _erofs(name: str) -> Callable[..., Awaitable[Any]]:
    async def refuse(self: "WandbFS", *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)
    refuse.__name__ = name
    return refuse


@dataclass
class Handle:
    node: Node
    reader: ObjectReader          # owns everything the open holds on the object (reader.py)


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
    xattrs: bool = True      # serve user.wandb.* (costs `ls -l` two FUSE requests per file)


class WandbFS(pyfuse3.Operations):
    def __init__(self, catalog: Catalog, fetcher: Fetcher, lineage: Lineage | None,
                 options: FsOptions | None = None, access_log: AccessLog | None = None) -> None:
        super().__init__()
        self.catalog = catalog
        self.fetcher = fetcher
        self.lineage = lineage
        self.access_log = access_log
        self.opts = options or FsOptions(uid=os.getuid(), gid=os.getgid())
        self.readers = ReaderInfo(runs=self.opts.reader_runs)
        self.table = InodeTable()
        self.table.add_root({"kind": "dir", "mode": 0o555, "mtime": time.time(), "data": {"level": "root"}})
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, list[tuple[str, Node]]] = {}
        self._fh = itertools.count(1)
        self._via: dict[tuple[int, tuple[Any, ...]], tuple[str, float]] = {}  # (pid, version key) -> alias
        self.nursery: trio.Nursery | None = None  # set by the mount: background fills, invalidations
        self.read_calls = 0
        self.read_bytes = 0
        self.counters = ReadCounters()  # opens hit/missed, bytes from the cache/W&B (the readers count)
        self.errors: collections.Counter[str] = collections.Counter()
        self.started = time.time()
        self.metrics: Any = None       # metrics.Metrics, when the mount has one
        self._warmed: set[tuple[Any, ...]] = set()   # versions/collections whose warm-up has started
        self._misses: dict[int, set[bytes]] = {}       # parent inode -> names answered "missing"

    # ---- attributes ------------------------------------------------------------------
    def _ttl(self, node: Node) -> float:
        if node.immutable:
            return IMMUTABLE_TTL
        if node.kind == "symlink":
            return self.opts.alias_ttl
        return self.opts.list_ttl

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.generation = 0
        a.entry_timeout = a.attr_timeout = self._ttl(node)
        a.st_mode = node.st_mode
        a.st_nlink = 2 if node.kind == "dir" else 1
        a.st_uid, a.st_gid = self.opts.uid, self.opts.gid
        a.st_size = len(node.target.encode()) if node.kind == "symlink" else node.size
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

    MISSES_KEPT = 10_000

    def _remember_miss(self, parent: Node, name: bytes) -> None:
        """Names the kernel now caches as missing (for --negative-ttl): a refresh un-caches them."""
        if sum(len(v) for v in self._misses.values()) >= self.MISSES_KEPT:
            self._misses.clear()  # bounded; forgetting only means a refresh waits for the TTL
        self._misses.setdefault(parent.inode, set()).add(name)

    async def refresh(self, prefix: tuple[str, ...] = ()) -> int:
        """Drop listing and alias caches under ``prefix`` (all if empty), and the kernel's
        cached misses there, so a version or alias created since shows up at once."""
        n = await self.catalog.refresh(prefix)
        keys = ("org", "reg", "coll")
        for inode in list(self._misses):
            node = self.table.get(inode)
            scope = tuple(node.data.get(k) for k in keys if k in node.data) if node is not None else None
            if scope is not None and scope[:len(prefix)] != prefix[:len(scope)]:
                continue
            for name in self._misses.pop(inode):
                try:
                    await trio.to_thread.run_sync(pyfuse3.invalidate_entry, inode, name)
                except OSError as e:  # ENOENT: the kernel had already dropped it
                    log.debug("invalidate_entry(%d, %r): %s", inode, name, e)
        return n

    # ---- building nodes --------------------------------------------------------------
    def _dir(self, key: tuple[Any, ...], mtime: float, immutable: bool = False, **data: Any) -> Node:
        return self.table.upsert(key, kind="dir", mode=0o555, mtime=mtime, immutable=immutable, data=data)

    def _link(self, key: tuple[Any, ...], target: str, mtime: float, **data: Any) -> Node:
        return self.table.upsert(key, kind="symlink", mode=0o777, target=target, mtime=mtime, data=data)

    def _version_dir(self, org: str, reg: str, coll: str, idx: int, mtime: float) -> Node:
        return self._dir(("ver", org, reg, coll, idx), mtime, immutable=True, level="tree",
                         org=org, reg=reg, coll=coll, idx=idx, parts=())

    async def _children(self, node: Node, want: str | None = None) -> list[tuple[str, Node]]:
        """Everything listed in a directory (unlisted names are only found by lookup).

        ``want``: the name a lookup looks for; a stale listing without it is refreshed first
        (bounded), since the name may be new."""
        d = node.data
        level = d["level"]
        now = time.time()
        if level == "root":
            return [(o, self._dir(("org", o), now, level="org", org=o))
                    for o in sorted(await self.catalog.orgs(want=want))]
        if level == "org":
            regs = await self.catalog.registries(d["org"], want=want)
            return [(r, self._dir(("reg", d["org"], r), info.created_at or now, level="reg", org=d["org"], reg=r))
                    for r, info in sorted(regs.items())]
        if level == "reg":
            colls = await self.catalog.collections(d["org"], d["reg"], want=want)
            return [(c, self._dir(("coll", d["org"], d["reg"], c), info.created_at or now, level="coll",
                                  org=d["org"], reg=d["reg"], coll=c)) for c, info in sorted(colls.items())]
        if level == "coll":
            org, reg, coll = d["org"], d["reg"], d["coll"]
            vers = await self.catalog.versions(org, reg, coll)
            out = [(f"v{i}", self._version_dir(org, reg, coll, i, v.created_at))
                   for i, v in sorted(vers.versions.items())]
            out += [(a, self._alias(org, reg, coll, a, i, vers.versions[i].created_at))
                    for a, i in sorted(vers.aliases.items()) if i in vers.versions]
            if ("coll", org, reg, coll) not in self._warmed:  # don't sort a big listing on every readdir
                self._background(("coll", org, reg, coll), self._warm_manifests, org, reg, coll,
                                 sorted(vers.versions))
            return out
        detail = await self._detail(node)
        listing = detail.manifest.listdir(d["parts"]) or {}
        return [(name, self._tree_node(node, detail, name, child)) for name, child in listing.items()]

    def _alias(self, org: str, reg: str, coll: str, alias: str, idx: int, mtime: float) -> Node:
        return self._link(("alias", org, reg, coll, alias), f"v{idx}", mtime, level="alias",
                          org=org, reg=reg, coll=coll, alias=alias, idx=idx)

    def _tree_node(self, parent: Node, detail: VersionDetail, name: str, child: Any) -> Node:
        d = parent.data
        parts = d["parts"] + (name,)
        key = ("path", d["org"], d["reg"], d["coll"], d["idx"], "/".join(parts))
        common = dict(level="tree", org=d["org"], reg=d["reg"], coll=d["coll"], idx=d["idx"], parts=parts)
        if child == DIR:
            return self._dir(key, detail.created_at, immutable=True, **common)
        return self.table.upsert(key, kind="file", mode=0o444, size=child.size, mtime=detail.created_at,
                                 immutable=True, data=dict(common, entry=child))

    async def _detail(self, node: Node) -> VersionDetail:
        d = node.data
        return await self.catalog.version(d["org"], d["reg"], d["coll"], d["idx"])

    # ---- background warm-ups ---------------------------------------------------------
    # A listing, a manifest or a first open says what is likely next; fetch it ahead, in the
    # background, bounded, and never let a failure here reach a reader.
    WARM_VERSIONS = 2000          # manifests loaded ahead when a collection is listed
    WARM_SMALL_FILE = 4 << 20     # files up to this size are fetched when their version is first opened
    WARM_VERSION_BYTES = 256 << 20
    WARM_PARALLEL = 8

    def _background(self, key: tuple[Any, ...], fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self.nursery is None or key in self._warmed or not self.opts.warm:
            return
        self._warmed.add(key)
        self.nursery.start_soon(self._quietly, fn, *args)

    async def _quietly(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await fn(*args)
        except Exception as e:  # noqa: BLE001 - warm-ups are best effort
            log.debug("warm-up %s%r: %s", getattr(fn, "__name__", fn), args[:4], e)

    async def _warm_manifests(self, org: str, reg: str, coll: str, indices: list[int]) -> None:
        async with trio.open_nursery() as n:
            for idx in indices[-self.WARM_VERSIONS:]:
                n.start_soon(self._quietly, self.catalog.version, org, reg, coll, idx)

    async def _warm_urls(self, detail: VersionDetail) -> None:
        first = next((p for p, e in detail.manifest.entries.items() if not e.ref), None)
        if first is not None:
            await self.catalog.file_url(detail, first)

    async def _warm_version(self, detail: VersionDetail) -> None:
        """Fetch a version's small files once one of them is opened (``cat *``, config + tokenizer)."""
        small = [e for _, e in sorted(detail.manifest.entries.items())
                 if not e.ref and e.size <= self.WARM_SMALL_FILE]
        if not small or sum(e.size for e in small) > self.WARM_VERSION_BYTES:
            return
        sem = trio.Semaphore(self.WARM_PARALLEL)

        async def one(entry: ManifestEntry) -> None:
            async with sem:
                await self.fetcher.warm(detail, entry)
        async with trio.open_nursery() as n:
            for e in small:
                n.start_soon(self._quietly, one, e)

    async def _child(self, parent: Node, name: str) -> Node | None:
        d = parent.data
        level = d["level"]
        if level == "org" and name.startswith(REGISTRY_PREFIX):
            reg = name[len(REGISTRY_PREFIX):]
            if reg in await self.catalog.registries(d["org"], want=reg):
                return self._link(("regprefix", d["org"], reg), reg, time.time(), level="regprefix")
            return None
        if level == "reg":
            qual = split_qualified(name)
            if qual is not None:
                coll, token = qual
                if coll not in await self.catalog.collections(d["org"], d["reg"], want=coll):
                    return None
                try:
                    idx = await self.catalog.resolve(d["org"], d["reg"], coll, token)
                except NotFound:
                    return None
                return self._link(("qual", d["org"], d["reg"], name), f"{coll}/v{idx}", time.time(),
                                  level="alias", org=d["org"], reg=d["reg"], coll=coll, alias=token, idx=idx)
        if level == "coll":
            try:
                ref = parse_version_token(name)
            except ValueError:
                return None
            org, reg, coll = d["org"], d["reg"], d["coll"]
            try:
                idx = await self.catalog.resolve(org, reg, coll, name)
            except NotFound:
                return None
            vers = await self.catalog.versions(org, reg, coll)
            created = vers.versions[idx].created_at
            if ref.kind == "index":
                return self._version_dir(org, reg, coll, idx, created)
            return self._alias(org, reg, coll, name, idx, created)
        if level == "tree":
            detail = await self._detail(parent)
            child = detail.manifest.lookup(d["parts"] + (name,))
            if child is None:
                return None
            if child != DIR:
                # A file is being looked up, so an open is likely: get the version's signed
                # URLs now (listings alone never cost a URL request).
                self._background(("urls", detail.artifact_id, detail.index), self._warm_urls, detail)
            return self._tree_node(parent, detail, name, child)
        for child_name, node in await self._children(parent, want=name):
            if child_name == name:
                return node
        return None

    # ---- handlers --------------------------------------------------------------------
    @_guard
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.table.get(parent_inode)
        if parent is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        sname = os.fsdecode(name)
        if sname == ".":
            node: Node | None = parent
        else:
            try:
                node = await self._child(parent, sname)
            except NotFound:
                node = None
        if node is None:
            if not parent.immutable:
                self._remember_miss(parent, name)
            return self._negative(parent.immutable)
        self.table.incref(node)
        return self.attrs(node)

    @_guard
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.table.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if node.kind == "symlink" and node.data.get("level") == "alias":
            await self._refresh_alias(node)
        return self.attrs(node)

    async def _refresh_alias(self, node: Node) -> None:
        """Re-resolve an alias symlink from the (alias-TTL cached) listing."""
        d = node.data
        idx = await self.catalog.resolve(d["org"], d["reg"], d["coll"], d["alias"])
        if idx != d["idx"]:
            log.info("alias %s:%s moved v%d -> v%d", d["coll"], d["alias"], d["idx"], idx)
            d["idx"] = idx
            node.target = f"{d['coll']}/v{idx}" if node.key[0] == "qual" else f"v{idx}"

    @_guard
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.table.get(inode)
        if node is None or node.kind != "symlink":
            raise pyfuse3.FUSEError(errno.EINVAL)
        d = node.data
        if d.get("level") == "alias":
            await self._refresh_alias(node)
            # Remember which alias this process came through, for the lineage record.
            self._via[(ctx.pid, ("ver", d["org"], d["reg"], d["coll"], d["idx"]))] = (d["alias"], time.monotonic())
        return os.fsencode(node.target)

    def forget(self, inode_list: list[tuple[int, int]]) -> None:
        try:
            for inode, n in inode_list:
                self.table.forget(inode, n)
        except Exception:  # noqa: BLE001 - forget must never raise
            log.exception("forget failed")

    @_guard
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.table.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if node.kind != "dir":
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._fh)
        self._dirs[fh] = await self._children(node)
        return fh

    @_guard
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dirs.get(fh, [])
        for i in range(start_id, len(entries)):
            name, node = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.attrs(node), i + 1):
                return
            self.table.incref(node)

    @_guard
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_guard
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.table.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if node.kind != "file":
            raise pyfuse3.FUSEError(errno.EISDIR)
        detail = await self._detail(node)
        fh = next(self._fh)
        latency = self.metrics.read_latency.observe if self.metrics is not None else None
        reader = ObjectReader(self.fetcher, detail, node.data["entry"], strict=self.opts.verify == "strict",
                              counters=self.counters, latency=latency)
        self._handles[fh] = Handle(node, reader)
        node.data["open_handles"] = node.data.get("open_handles", 0) + 1
        self._note_use(node, detail, ctx)
        if self.nursery is not None:
            self.nursery.start_soon(reader.start)  # hold a cached object now, or start its fill
            self._background(("files", detail.artifact_id, detail.index), self._warm_version, detail)
        # keep_cache only for verified bytes. Streaming serves pages before the digest is
        # known; a reader may stop early, or the digest may fail: an open of an object not
        # (yet) verified is made without keep_cache, so the kernel drops whatever pages it
        # holds for the file before this handle reads, and unverified bytes never outlive
        # the handles that were served them. Re-opens of cached files keep their pages.
        keep = self.opts.verify == "strict" or self.fetcher.is_verified(node.data["entry"])
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=False)

    def _note_use(self, node: Node, detail: VersionDetail, ctx: pyfuse3.RequestContext) -> None:
        """Queue the lineage use (on the reader's run if it has one) and write the access log."""
        if self.lineage is None and self.access_log is None:
            return
        d = node.data
        token = f"v{detail.index}"
        via = self._via.get((ctx.pid, ("ver", d["org"], d["reg"], d["coll"], d["idx"])))
        if via is not None and time.monotonic() - via[1] < 60:
            token = via[0]
        used_as = qualified_name(detail.org, detail.registry, detail.collection, token)
        # /proc is read only when someone needs the answer (reader runs, or the access log)
        reader = self.readers.get(ctx.pid, ctx.uid) if self.opts.reader_runs or self.access_log else None
        run = (reader.run if reader else None) or MOUNT_RUN
        if self.lineage is not None:
            self.lineage.note(Use(detail.artifact_id, detail.name, used_as, run))
        if self.access_log is not None and reader is not None:
            path = "/".join((d["org"], d["reg"], d["coll"], token, *d["parts"]))
            self.access_log.record(pid=ctx.pid, uid=ctx.uid, process=reader.comm, path=path,
                                   name=detail.name, used_as=used_as, artifact_id=detail.artifact_id,
                                   run=None if self.lineage is None else run)

    @_guard
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handles.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if h.reader.failed is not None:  # the kernel retries a failed page read at once: no refetch
            raise pyfuse3.FUSEError(_errno_of(h.reader.failed))
        self.read_calls += 1
        self.read_bytes += size
        try:
            return await h.reader.read(off, size)
        except (BadBytes, RefChanged):  # pages already handed out may be wrong
            self._drop_page_cache(h.node)
            raise

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
        h = self._handles.pop(fh, None)
        if h is None:
            return
        log.debug("release %s: %d reads, %d bytes requested so far", h.reader.entry.path, self.read_calls,
                  self.read_bytes)
        h.reader.close()
        h.node.data["open_handles"] = max(0, h.node.data.get("open_handles", 1) - 1)

    @_guard
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLKSIZE
        s.f_namemax = 255
        s.f_files = len(self.table)
        return s

    @_guard
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        return not (mode & os.W_OK)

    # ---- extended attributes: what the Registry knows about an entry ------------------
    XATTR = "user.wandb."
    STATUS_XATTR = "user.wandbfs.status"

    async def _xattrs(self, node: Node) -> dict[str, bytes]:
        d = node.data
        if d.get("level") == "root":
            return {self.STATUS_XATTR: json.dumps(self.status()).encode()}
        if d.get("level") != "tree":
            return {}
        detail = await self._detail(node)
        try:
            vers = await self.catalog.versions(d["org"], d["reg"], d["coll"])
            aliases = sorted(a for a, i in vers.aliases.items() if i == detail.index)
        except (NotFound, BackendError):
            aliases = sorted(detail.aliases)
        x = self.XATTR
        out = {x + "name": detail.name, x + "version": f"v{detail.index}", x + "aliases": ",".join(aliases),
               x + "artifact_id": detail.artifact_id,
               x + "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(detail.created_at)),
               x + "metadata": json.dumps(detail.metadata, sort_keys=True)}
        entry = d.get("entry")
        if entry is not None:
            out.update({x + "path": entry.path, x + "digest": entry.digest, x + "size": str(entry.size)})
            if entry.md5_hex:
                out[x + "md5"] = entry.md5_hex
            if entry.ref:
                out[x + "ref"] = entry.ref
        else:
            prefix = "/".join(d["parts"])
            out.update({x + "path": prefix, x + "digest": detail.manifest.digest(),
                        x + "size": str(sum(e.size for p, e in detail.manifest.entries.items()
                                            if not prefix or p.startswith(prefix + "/")))})
        return {k: v.encode() for k, v in out.items()}

    @_guard
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not self.opts.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # the kernel then stops asking for good
        sname = os.fsdecode(name)
        node = self.table.get(inode)
        # Cheap refusal first: `ls -l` asks for security/ACL names on every file.
        if node is None or not sname.startswith(("user.wandb.", "user.wandbfs.")):
            raise pyfuse3.FUSEError(errno.ENODATA)
        value = (await self._xattrs(node)).get(sname)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value

    @_guard
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if not self.opts.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        node = self.table.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return [os.fsencode(k) for k in await self._xattrs(node)]

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
            "errors": dict(self.errors), "open_files": len(self._handles),
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
