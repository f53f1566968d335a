"""Partial objects: the parts of an object read so far, kept on disk between mounts.

An adaptive fill (fill/item.py) fetches what is read, not the whole file, into a sparse
file here; its present byte ranges are recorded on the file itself, in an extended
attribute (rclone's vfscache item keeps the same: a sparse file and the ranges it holds). A later open - this mount or the next -
reuses both, and the object is completed, verified and moved into the cache
(``obj/md5/...``, by the same atomic rename as any download) once the whole file is read.
Nothing here is ever served as verified: a partial object's bytes were checked against the
ranges asked for, but only the whole file can be checked against the manifest digest, and
the read that reaches EOF waits for that.

Layout, beside the SDK's cache and outside its ``artifacts/`` tree (the SDK's cleanup
removes every temp file there)::

    <root>/wandbfs-meta/partial/<kind>/<hex>    the sparse file; xattr user.wandbfs.ranges =
                                                {"size", "digest", "ranges": [[start, end], ...]}

The ranges live and die with the file they describe (a sidecar file could outlive it and
describe a new file at the same path), and are set only after the data is on disk
(``fdatasync``); a crash loses at most ranges, never claims bytes that are not there. A
record that would not fit in one xattr keeps its largest ranges (claiming less is always
safe). A filesystem without user xattrs keeps no partial objects between fills. Writers hold the object's
lock (store.py ``object_lock``) and a shared flock on the data file, so eviction (which
counts partial objects by their allocated blocks) leaves a partial object in use alone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandbfs.cache.store import ObjectCache, _mkdirs, object_key
from wandbfs.model.manifest import ManifestEntry
from wandbfs.model.ranges import RangeSet

log = logging.getLogger(__name__)

__all__ = ["Partials"]

XATTR = "user.wandbfs.ranges"
MAX_RECORD = 3800
"""Bytes of one ranges record: ext4 keeps a file's xattrs in one 4 KiB block."""


class Partials:
    """The partial objects of one cache (one instance per mount or command; no shared state)."""

    def __init__(self, cache: ObjectCache) -> None:
        self.cache = cache
        self.dir = cache.root / "wandbfs-meta" / "partial"
        self._warned = False

    def data_path(self, entry: ManifestEntry) -> Path:
        key = object_key(entry)
        return self.dir / key.kind / key.hex

    def open(self, entry: ManifestEntry, *, create: bool) -> tuple[int, Path, RangeSet] | None:
        """The object's partial file, opened for writing, with the ranges it holds; a new
        empty one with ``create``, else ``None`` when there is none. Call with the object
        lock held: nobody else writes it meanwhile."""
        path = self.data_path(entry)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
            _mkdirs(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            present = self._load(entry, fd, path)
            if present is None:   # no (matching) ranges: whatever is in the file is unknown
                present = RangeSet()
                os.ftruncate(fd, 0)
            os.ftruncate(fd, entry.size)
        except BaseException:
            os.close(fd)
            raise
        return fd, path, present

    @staticmethod
    def _record(fd: int) -> dict[str, Any] | None:
        try:
            raw = json.loads(os.getxattr(fd, XATTR))
        except OSError:
            return None
        except ValueError:
            return None
        return raw if isinstance(raw, dict) else None

    def _load(self, entry: ManifestEntry, fd: int, path: Path) -> RangeSet | None:
        raw = self._record(fd)
        if raw is None:
            return None
        try:
            if raw["size"] != entry.size or raw["digest"] != entry.digest:
                return None
            present = RangeSet()
            for s, e in raw["ranges"]:
                if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= entry.size):
                    return None
                present.add(s, e)
            return present
        except (KeyError, TypeError, ValueError) as e:
            log.info("partial object %s: unreadable ranges (%s); starting it afresh", path, e)
            return None

    def save(self, entry: ManifestEntry, fd: int, path: Path, present: RangeSet) -> None:
        """Record ``present`` on the data file ``fd``: the data reaches the disk first."""
        os.fdatasync(fd)
        ranges = present.intervals()
        while True:
            doc = json.dumps({"size": entry.size, "digest": entry.digest, "ranges": ranges}).encode()
            if len(doc) <= MAX_RECORD or not ranges:
                break
            ranges = sorted(sorted(ranges, key=lambda r: r[1] - r[0])[len(ranges) // 4 + 1:])
        try:
            os.setxattr(fd, XATTR, doc)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if not self._warned:
                self._warned = True
                log.info("%s keeps no extended attributes: partial objects are not kept between fills", path)
            self.drop(path)

    def forget_ranges(self, fd: int) -> None:
        """The data file becomes the object (renamed into the cache): its ranges go."""
        with contextlib.suppress(OSError):
            os.removexattr(fd, XATTR)

    def drop(self, path: Path) -> None:
        """Remove a partial object (bad bytes, or evicted)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def present_bytes(self, path: Path) -> int:
        """How many bytes the ranges of ``path`` say are there (0 if none)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return 0
        try:
            raw = self._record(fd)
            return sum(int(e) - int(s) for s, e in raw["ranges"]) if raw else 0
        except (KeyError, TypeError, ValueError):
            return 0
        finally:
            os.close(fd)

    def iter(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every partial data file, with its stat (``st_blocks`` is what it takes on disk)."""
        try:
            kinds = [de.path for de in os.scandir(self.dir) if de.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        for kind in kinds:
            yield from ObjectCache._regular_files(kind)
