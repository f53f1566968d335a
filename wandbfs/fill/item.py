"""The fill engine: one object's bytes fetched in parts, in parallel, into a sparse file.

A ``FillItem`` is the one in-progress download of an object (rclone's vfscache item, in
spirit): it owns the file the bytes go to, which byte ranges are present, the readers
waiting for ranges, and the plan of what to fetch next (``model/readahead.py``). Two modes:

* **whole** (files of one part, strict mode, warm-ups, ``--fill whole``): every part, the
  parts readers wait for first, into a temp file that is renamed into the cache;
* **adaptive** (the default for larger files): only what is read, plus a read-ahead window
  that grows while reads are sequential, into a *partial object* that outlives the mount
  (``cache/partial.py``); the plan switches to whole once reads are sequential enough or
  cover most of the file, and a read at EOF asks for the whole file too.

Workers are threads started by ``drive`` when there is something to fetch (one until the
first byte has arrived, so the first read's range is not sharing the link, then up to
``concurrency``); they exit when the queue is empty, so an open file that is not being
read holds no thread. An adaptive item nobody holds and nobody fetches for is *parked*:
its ranges are saved, its descriptor closed, and the next open starts from them.

A hasher thread follows the contiguous prefix once the whole file is coming; the digest
decides: the file is renamed into the object cache, or the item fails and every waiter
gets the error. W&B publishes only a whole-file digest, so the guarantee is: no read that
reaches EOF succeeds on wrong bytes. Before that, bytes land only where they belong (the
``RangeGetter``'s checks, getter.py). A temp file removed under the download is replaced,
not an error.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable

import trio
import urllib3

from wandbfs.cache.partial import Partials
from wandbfs.cache.store import DigestMismatch, Hasher, ObjectCache
from wandbfs.fill.errors import BadBytes, FetchError, NoSpace, mismatch_message
from wandbfs.fill.getter import (CHUNK, FetchPolicy, FetchStats, Getter, GetterFactory, RangeGetter, UrlFn)
from wandbfs.model.manifest import ManifestEntry
from wandbfs.model.ranges import RangeSet
from wandbfs.model.readahead import FillPlan, PlanLimits
from wandbfs.sdk.client import AuthError, BackendError, NotFound

log = logging.getLogger(__name__)

__all__ = ["CHUNK", "FetchPolicy", "FetchStats", "FillItem", "copy_fd"]

Thread = Callable[[Callable[[], None]], Awaitable[None]]
"""Runs a blocking function in a worker thread (the fetcher's: its limiter, abandoned on cancel)."""


def copy_fd(src: int, dst: int, count: int, offset: int = 0) -> None:
    """Copy ``count`` bytes at ``offset`` from one file to the same offset of another
    (in the kernel where it can: ``copy_file_range``)."""
    end = offset + count
    while offset < end:
        try:
            n = os.copy_file_range(src, dst, end - offset, offset, offset)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(src, min(CHUNK * 4, end - offset), offset)
            n = os.pwrite(dst, data, offset) if data else 0
        if n == 0:
            raise FetchError(f"copying a temp file: nothing at byte {offset} of {end}")
        offset += n



class FillItem:
    MAX_TEMP_MOVES = 3
    """A temp file removed under the download is replaced this many times, then EIO."""

    def __init__(self, entry: ManifestEntry, cache: ObjectCache, policy: FetchPolicy, url_fn: UrlFn,
                 http: urllib3.PoolManager | None, stats: FetchStats, getter: GetterFactory | None = None, *,
                 whole: bool = True, partials: Partials | None = None) -> None:
        """``getter`` replaces the signed-URL ``RangeGetter`` (reference entries: refs.py).
        ``whole``: fetch every part (else adaptive); ``partials``: where adaptive fills keep
        their bytes between mounts (a partial object left by an earlier fill is reused in
        either mode). Call with the object lock held."""
        self.entry = entry
        self.size = entry.size
        self.cache = cache
        self.policy = policy
        self.stats = stats
        self.partials = partials
        self.part_size = max(CHUNK, policy.part_size)
        self.nparts = max(1, -(-self.size // self.part_size))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiters: list[tuple[int, int, trio.Event]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.path: Path | None = None   # the verified cache path, once done
        self.parked = False             # adaptive, idle, let go: its ranges are on disk
        self._keep = False              # on failure keep the partial object (cancelled at exit)
        self._users = 0
        self._running = 0               # worker threads started by drive()
        self._hasher_started = False
        self._wake = trio.Event()
        # Wake trio-side waiters without blocking the worker on a round trip to the loop.
        self._token = trio.lowlevel.current_trio_token()
        opened = partials.open(entry, create=not whole) if partials is not None else None
        self.persistent = opened is not None
        if opened is not None:
            self.fd, self.tmp, self.present = opened
            if self.present.total():
                log.info("%s: resuming a partial object (%d of %d bytes present)", entry.path,
                         self.present.total(), self.size)
        else:
            self.fd, self.tmp = cache.new_temp()
            self.present = RangeSet()
            os.ftruncate(self.fd, self.size)
        cache.hold(self.fd)  # the file becomes the object: in use until the fill is closed
        self.plan = FillPlan(self.size, PlanLimits(part=self.part_size), whole=whole, present=self.present)
        self.started = time.monotonic()
        self.first_byte_s: float | None = None   # seconds from start to the first byte on disk
        self.getter: Getter = (getter(self.workers, self._failed) if getter is not None else
                               RangeGetter(entry, policy, url_fn, http, stats, self.workers, self._failed))

    def _failed(self) -> bool:
        with self._lock:
            return self.error is not None

    # ---- reader side (trio) ----------------------------------------------------------
    @property
    def workers(self) -> int:
        return min(self.nparts, self.policy.concurrency)

    def acquire(self) -> bool:
        """Hold the item (a reader, or one read in flight); ``False`` if it was parked."""
        with self._lock:
            if self.parked:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            idle = self._users == 0
            close = idle and self.done.is_set()
        if close:
            self._close_fd()
        elif idle:
            self._poke()

    def _close_fd(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def has(self, start: int, end: int) -> bool:
        """``[start, end)`` is on disk now."""
        with self._lock:
            return self.present.contains(start, min(end, self.size))

    async def wait_range(self, start: int, end: int) -> None:
        """Return once ``[start, end)`` is on disk; raise the item's error if it failed.
        Every read is told to the plan, present or not: it steers the read-ahead."""
        end = min(end, self.size)
        with self._lock:
            self.plan.on_read(start, end)
            if self.error is None and not self.present.contains(start, end):
                ev = trio.Event()
                self._waiters.append((start, end, ev))
            else:
                ev = None
            pending = self.plan.pending
        if pending:
            self._poke()
        if ev is not None:
            await ev.wait()
        if self.error is not None:
            raise self.error

    def go_whole(self) -> None:
        """Fetch the rest of the file and verify it (a read at EOF, strict mode, a warm-up)."""
        with self._lock:
            self.plan.go_whole()
        self._poke()

    async def wait_done(self) -> Path:
        self.go_whole()
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.path is not None
        return self.path

    def pread(self, size: int, off: int) -> bytes:
        with self._lock:
            fd = self.fd
            if fd >= 0:
                return os.pread(fd, size, off)
        if self.path is None:
            raise FetchError(f"{self.entry.path}: the download was abandoned")
        with open(self.path, "rb", buffering=0) as f:  # finished and closed: read the cache file
            return os.pread(f.fileno(), size, off)

    # ---- the driver (trio): starts workers and the hasher, parks an idle item ---------
    def _poke(self) -> None:
        """Something changed: let ``drive`` look again (trio thread only)."""
        self._wake.set()

    def _poke_from_thread(self) -> None:
        self._token.run_sync_soon(lambda: self._wake.set())

    async def drive(self, thread: Thread) -> None:
        """Run the fill until it is done, failed, or parked (adaptive and let go): start
        workers while the plan has requests, the hasher once the whole file is coming."""
        async with trio.open_nursery() as n:
            while True:
                self._wake = trio.Event()
                spawn, hash_now, park = 0, False, False
                with self._lock:
                    ended = self.error is not None or self.done.is_set()
                    if not ended:
                        allowed = self.policy.concurrency if self.first_byte_s is not None else 1
                        want = self.plan.queued + (allowed if self.plan.whole and self.plan.pending else 0)
                        spawn = max(0, min(allowed - self._running, self.nparts, want))
                        self._running += spawn
                        hash_now = not self._hasher_started and (self.plan.whole or self.present.total() >= self.size)
                        self._hasher_started |= hash_now
                        park = (not self._hasher_started and self._users == 0 and self._running == 0
                                and not self.plan.pending)
                        self.parked = park
                    running, hashing = self._running, self._hasher_started
                if ended:
                    if running == 0 and (self.done.is_set() or not hashing):
                        if not hashing:   # failed before the whole file was asked for
                            self._discard()
                            self.done.set()
                        break
                elif park:
                    await trio.to_thread.run_sync(self._park)
                    break
                for _ in range(spawn):
                    n.start_soon(self._worker, thread)
                if hash_now:
                    n.start_soon(self._hash, thread)
                await self._wake.wait()

    async def _worker(self, thread: Thread) -> None:
        try:
            await thread(self.run_worker)
        finally:
            with self._lock:
                self._running -= 1
            self._poke()

    async def _hash(self, thread: Thread) -> None:
        try:
            await thread(self.run_hasher)
        finally:
            await self.done.wait()   # set by the hasher, soon, on this thread
            self._poke()

    def _park(self) -> None:
        """Save the ranges of a partial object and let go of it (worker thread)."""
        try:
            if self.persistent and self.fd >= 0:
                self.partials.save(self.entry, self.fd, self.tmp, self.present)  # type: ignore[union-attr]
            elif not self.persistent:
                self.cache.discard(self.tmp)
        except OSError as e:
            log.warning("%s: could not save its partial object (%s); dropping it", self.entry.path, e)
            self._discard()
        finally:
            self._close_fd()

    def _discard(self) -> None:
        """Remove what a failed fill wrote (a cancelled adaptive fill keeps its ranges)."""
        if self.persistent:
            if not self._keep:
                self.partials.drop(self.tmp)   # type: ignore[union-attr]
        else:
            self.cache.discard(self.tmp)

    # ---- worker threads --------------------------------------------------------------
    def run_worker(self) -> None:
        """Fetch what the plan asks for until it asks for nothing (or the item failed)."""
        while True:
            with self._lock:
                req = None if self.error is not None else self.plan.next_request()
            if req is None:
                return
            start, end = req
            try:
                self.getter.fetch(start, end, self._write)
            except BaseException as e:  # noqa: BLE001 - one failed part fails the object
                self._fail(e if isinstance(e, (BackendError, NotFound, AuthError)) else
                           FetchError(f"{self.entry.path}: {type(e).__name__}: {e}"))
                return

    def cancel(self) -> None:
        """Stop now (the mount is stopping): waiters get EIO, workers stop at their next
        chunk (a stalled one is abandoned by its caller). A temp file is removed; a partial
        object keeps what arrived, for the next mount."""
        with self._lock:
            keep = self.persistent and self.error is None and not self.done.is_set() and self.fd >= 0
            self._keep = keep
        self._fail(FetchError(f"{self.entry.path}: download cancelled (the mount is stopping)"))
        if keep:
            try:
                self.partials.save(self.entry, self.fd, self.tmp, self.present)  # type: ignore[union-attr]
            except OSError as e:
                log.info("%s: partial object not saved at exit (%s)", self.entry.path, e)
        else:
            self._discard()

    def _write(self, pos: int, chunk: bytes) -> None:
        # Write and mark under one lock: the temp file can be replaced (``_move_to_new_temp``),
        # and a range marked present must be in the file readers read from.
        with self._lock:
            if self.error is not None:   # failed or cancelled: nothing more goes to disk
                raise FetchError(f"{self.entry.path}: the download was stopped")
            os.pwrite(self.fd, chunk, pos)
            first = self.first_byte_s is None
            if first:
                self.first_byte_s = time.monotonic() - self.started
            self.present.add(pos, pos + len(chunk))
            ready = [w for w in self._waiters if self.present.contains(w[0], w[1])]
            if ready:
                self._waiters = [w for w in self._waiters if w not in ready]
            self._cond.notify_all()
        for _, _, ev in ready:
            self._token.run_sync_soon(ev.set)
        if first:
            self._poke_from_thread()   # more workers may start now

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is not None:
                return
            self.error = error
            waiters, self._waiters = self._waiters, []
            self._cond.notify_all()
        for _, _, ev in waiters:
            self._token.run_sync_soon(ev.set)
        self._poke_from_thread()

    def _commit(self, hasher: Hasher) -> Path:
        """Rename the complete file into the cache. Someone may have removed it (the SDK's
        ``cleanup(remove_temp=True)`` empties ``artifacts/tmp``): its bytes are still ours
        through the open descriptor, so they move to a new temp and the rename is tried
        again; no byte is fetched twice and no reader sees a hole."""
        for moves in range(self.MAX_TEMP_MOVES + 1):
            try:
                if os.fstat(self.fd).st_nlink > 0:
                    if self.persistent:   # the ranges go with the file: it becomes the object
                        self.partials.forget_ranges(self.fd)   # type: ignore[union-attr]
                    return self.cache.commit(self.tmp, self.entry, hasher=hasher)
            except FileNotFoundError:   # removed between the check and the rename
                if os.fstat(self.fd).st_nlink > 0:
                    raise
            if moves == self.MAX_TEMP_MOVES:
                break
            log.warning("the temp file of %s was removed during its download (%s; the SDK's cache "
                        "cleanup does this): moving its %d bytes to a new one", self.entry.path, self.tmp,
                        self.size)
            self._move_to_new_temp()
        raise FetchError(f"{self.entry.path}: its temp file in {self.cache.tmp_dir} was removed "
                         f"{self.MAX_TEMP_MOVES + 1} times")

    def _move_to_new_temp(self) -> None:
        """Copy every byte of the (unlinked) file into a new temp and read from that.

        Called by the hasher once all bytes are present; a worker still finishing a part
        writes the same bytes, under the lock, into whichever file is current."""
        fd, tmp = self.cache.new_temp()
        try:
            os.ftruncate(fd, self.size)
            copy_fd(self.fd, fd, self.size)
            self.cache.hold(fd)
        except BaseException:
            os.close(fd)
            self.cache.discard(tmp)
            raise
        with self._lock:
            old, self.fd, self.tmp = self.fd, fd, tmp
            self.persistent = False   # a temp file now, renamed into the cache when verified
        os.close(old)

    def run_hasher(self) -> None:
        """Hash the contiguous prefix as it grows, then verify and commit (or fail)."""
        hasher = Hasher.for_entry(self.entry)
        pos = 0
        try:
            while pos < self.size:
                with self._lock:
                    while self.error is None and self.present.prefix() <= pos:
                        self._cond.wait(timeout=1.0)
                    if self.error is not None:
                        raise self.error
                    upto = self.present.prefix()
                while pos < upto:
                    n = min(CHUNK * 4, upto - pos)
                    hasher.update(os.pread(self.fd, n, pos))
                    pos += n
            self.path = self._commit(hasher)
            self.cache.mark_verified(self.path, self.entry)
            self.stats.downloads += 1
            elapsed = time.monotonic() - self.started
            log.info("fetched %s: %d bytes in %.2fs (%.0f MiB/s, %d parts)", self.entry.path, self.size,
                     elapsed, self.size / max(elapsed, 1e-9) / 2**20, self.nparts)
        except OSError as e:
            self._fail(NoSpace(f"{self.entry.path}: no space left in the cache") if e.errno in (
                errno.ENOSPC, errno.EDQUOT) else FetchError(f"{self.entry.path}: {type(e).__name__}: {e}"))
        except DigestMismatch as e:
            self.stats.digest_failures += 1
            log.error("digest mismatch for %s: %s", self.entry.ref or self.entry.path, e)
            self._keep = False
            self._fail(BadBytes(mismatch_message(self.entry)))
        except BaseException as e:  # noqa: BLE001
            self._fail(e if isinstance(e, (BackendError, NotFound, AuthError)) else
                       FetchError(f"{self.entry.path}: {type(e).__name__}: {e}"))
        finally:
            if self.error is not None:
                self._discard()
            self._token.run_sync_soon(self.done.set)
            with self._lock:
                idle = self._users == 0
            if idle:
                self._close_fd()
