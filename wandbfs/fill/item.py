"""The fill engine: one object downloaded in parts, in parallel, into a sparse temp file.

A ``FillItem`` is the one in-progress download of an object (rclone's vfscache item, in
spirit): it tracks which byte ranges are present, so a read is served as soon as its range
has arrived instead of after the whole file. Parts are fetched with ranged GETs by a few
worker threads, the parts readers are waiting for first, the rest in order. A hasher thread
follows the contiguous prefix; at the end the digest decides: the temp file is renamed into
the object cache, or the item fails and every waiter gets the error. W&B publishes only a
whole-file digest, so the guarantee is: no read that reaches EOF succeeds on wrong bytes.
Before that, bytes land only where they belong: a 206 is written only if its Content-Range
is the range asked for (else the part is fetched again), a 200 to a ranged GET is read from
the part's start. A part that storage leaves waiting ``read_timeout`` seconds in all, over
its retries, fails; a temp file removed under the download is replaced, not an error.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

import trio
import urllib3

from wandbfs.cache.store import DigestMismatch, Hasher, ObjectCache
from wandbfs.fill.errors import BadBytes, FetchError, NoSpace, Transient, UrlRefused
from wandbfs.model.manifest import ManifestEntry
from wandbfs.model.ranges import RangeSet, content_range_problem
from wandbfs.sdk.client import AuthError, BackendError, NotFound

log = logging.getLogger(__name__)

TODO, RUNNING, DONE = 0, 1, 2
CHUNK = 1 << 20


@dataclass
class FetchPolicy:
    read_timeout: float = 30.0        # a part that gets no byte for this long, over all its retries, fails
    attempts: int = 5                 # transient failures (5xx, 429, resets, stalls, wrong ranges) in a row
    digest_attempts: int = 2          # strict mode: a digest mismatch is fetched once more, then EIO
    url_refreshes: int = 2            # expired signed URL: ask W&B for a fresh one
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    part_size: int = 8 << 20          # ranged GET size for large files
    concurrency: int = 4              # parallel part downloads per object
    max_connect_timeout: float = 10.0

    @property
    def connect_timeout(self) -> float:
        """Follows ``read_timeout`` (``--read-timeout 3`` must not wait 10 s for a SYN-ACK)."""
        return min(self.max_connect_timeout, self.read_timeout)


@dataclass
class FetchStats:
    downloads: int = 0
    bytes_downloaded: int = 0
    digest_failures: int = 0
    retries: int = 0
    url_refreshes: int = 0
    in_flight: int = 0
    uncached: int = 0                 # objects served without caching (no room)


UrlFn = Callable[[bool], str]   # blocking, called from worker threads: refresh -> signed URL


Sink = Callable[[int, bytes], None]   # (offset, bytes) as they arrive

FOLLOW_REDIRECTS = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)
"""Follow redirects, retry nothing (our own loop retries, with backoff)."""

ResponseCheck = Callable[[int, "urllib3.HTTPHeaderDict", int, int], None]
"""(status, headers, start, end) of each response, before its body is read; raises to refuse it."""


class Getter(Protocol):
    """Delivers byte ranges of one object: ``RangeGetter`` (signed URLs, http refs) or a
    reference source (refs.py). Blocking, called from worker threads."""

    def fetch(self, start: int, end: int, sink: Sink) -> None: ...


GetterFactory = Callable[[int, Callable[[], bool]], Getter]
"""(workers, cancelled) -> the getter a fill or stream uses instead of a signed-URL RangeGetter."""


def deliver(entry: ManifestEntry, sink: Sink, pos: int, chunk: bytes) -> None:
    """Hand bytes to the sink; a failure there is our side (the cache's disk), not the source's."""
    try:
        sink(pos, chunk)
    except OSError as e:  # no retry fixes a full disk
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"{entry.path}: no space left in the cache") from e
        raise FetchError(f"{entry.path}: writing the cache failed: {e}") from e


class RangeGetter:
    """Ranged GETs of one object with the retry rules: backoff on transient failures, a
    fresh signed URL when storage refuses the old one, a deadline on every read.

    Shared by the fill (which writes into the cache) and the uncached stream (which keeps
    a few blocks in memory); blocking, called from worker threads.
    """

    def __init__(self, entry: ManifestEntry, policy: FetchPolicy, url_fn: UrlFn, http: urllib3.PoolManager,
                 stats: FetchStats, workers: int = 1, cancelled: Callable[[], bool] = lambda: False, *,
                 headers: Mapping[str, str] | None = None, check: ResponseCheck | None = None,
                 skip_unranged: bool = False, follow_redirects: bool = False) -> None:
        """``headers`` go on every request; ``check`` sees every response first (references use
        it to refuse an object that changed since it was logged); ``follow_redirects`` follows
        up to 5 (the pool's ``retries=False`` returns a 3xx as is). A 200 to a ranged request
        (a server or proxy that ignored Range) is always used, by skipping to the part's start,
        so ``skip_unranged`` no longer changes anything (kept for its callers)."""
        self.entry = entry
        self.headers = dict(headers or {})
        self.check = check
        self.retries = FOLLOW_REDIRECTS if follow_redirects else None
        self.size = entry.size
        self.policy = policy
        self.url_fn = url_fn
        self.http = http
        self.stats = stats
        self.workers = workers
        self.cancelled = cancelled
        self._lock = threading.Lock()
        self._url: str | None = None
        self._refreshes = 0
        self._warned_unranged = False

    def _url_for(self, refresh: bool) -> str:
        with self._lock:
            if refresh:
                self._refreshes += 1
                self.stats.url_refreshes += 1
                if self._refreshes > self.policy.url_refreshes * self.workers:
                    raise AuthError(f"{self.entry.path}: storage keeps refusing fresh URLs")
                self._url = None
            url = self._url
        if url is None:
            url = self.url_fn(refresh)
            with self._lock:
                self._url = url
        return url

    def fetch(self, start: int, end: int, sink: Sink) -> None:
        """Deliver ``[start, end)`` to ``sink``, retrying; raises FetchError when it gives up.

        A retry resumes after the last byte delivered. The part gives up after ``attempts``
        failures in a row without a byte, or once storage has kept it waiting
        ``read_timeout`` seconds in all since its last byte (a stall is not retried into
        ``attempts x read_timeout``); any byte that arrives resets both. The first attempt
        gets half of that wait, so a connection that went silent (half-open, a stuck proxy)
        is replaced by a fresh one within the same deadline; our own backoff sleeps are not
        storage's wait and do not count.
        """
        p = self.policy
        got = _Progress(start, time.monotonic())

        def tracked(pos: int, chunk: bytes) -> None:
            sink(pos, chunk)
            got.pos, got.at = pos + len(chunk), time.monotonic()

        waited = 0.0        # seconds storage kept this part waiting since its last byte
        transient = 0
        refresh = False
        while got.pos < end:
            url = self._url_for(refresh)
            refresh = False
            before, t0 = got.pos, time.monotonic()
            try:
                left = p.read_timeout - waited
                self._get_range(url, got.pos, end, tracked, left / 2 if transient == 0 else left)
            except UrlRefused as e:
                log.info("signed URL for %s refused (%s); refreshing", self.entry.path, e)
                refresh = True
            except Transient as e:
                now = time.monotonic()
                if got.pos > before:   # bytes arrived: count and wait start again from the last one
                    transient, waited = 0, now - got.at
                else:
                    waited += now - t0
                transient += 1
                self.stats.retries += 1
                if waited >= p.read_timeout:
                    raise FetchError(f"{self.entry.path}: no bytes from storage for {waited:.1f}s "
                                     f"(read timeout {p.read_timeout:g}s, {transient} attempts): {e}") from e
                if transient >= p.attempts:
                    raise FetchError(f"{self.entry.path}: download failed after {transient} attempts: {e}") from e
                delay = min(p.backoff_max, p.backoff_base * 2 ** (transient - 1)) * (0.5 + random.random() / 2)
                log.warning("download of %s failed at byte %d (%s); retry %d in %.2fs",
                            self.entry.path, got.pos, e, transient, delay)
                time.sleep(delay)
                if self.cancelled():
                    return

    def _get_range(self, url: str, start: int, end: int, sink: Sink, wait: float) -> None:
        """GET ``[start, end)`` into ``sink``, waiting at most ``wait`` s for any one byte;
        Transient if it ended early (the sink has what arrived)."""
        whole = start == 0 and end == self.size
        headers = dict(self.headers)
        if not whole:
            headers["Range"] = f"bytes={start}-{end - 1}"
        wait = max(wait, 0.001)
        try:
            r = self.http.request("GET", url, headers=headers, preload_content=False, redirect=True,
                                  timeout=urllib3.Timeout(connect=min(self.policy.connect_timeout, wait), read=wait),
                                  **({"retries": self.retries} if self.retries is not None else {}))
        except urllib3.exceptions.HTTPError as e:
            raise Transient(f"{type(e).__name__}: {e}") from e
        complete = cut = False
        pos = start
        try:
            if self.check is not None:
                self.check(r.status, r.headers, start, end)
            if r.status in (401, 403):
                raise UrlRefused(f"HTTP {r.status}")
            if r.status == 404:
                raise NotFound(f"{self.entry.path}: storage has no such object (HTTP 404)")
            if r.status in (408, 429) or r.status >= 500:
                raise Transient(f"HTTP {r.status}")
            skip = self._body_offset(r.status, r.headers, start, end, whole)
            for chunk in r.stream(CHUNK, decode_content=False):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                chunk = chunk[: end - pos]
                if not chunk:
                    cut = True   # the body goes on past the part (a whole object for a range)
                    break
                deliver(self.entry, sink, pos, chunk)
                self.stats.bytes_downloaded += len(chunk)
                pos += len(chunk)
            if pos < end:
                raise Transient(f"short body: {pos - start} of {end - start} bytes")
            complete = True
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise Transient(f"{type(e).__name__}: {e} (at byte {pos})") from e
        finally:
            if not complete or cut:
                r.close()  # unread bytes would poison the next request on this connection
            r.release_conn()

    def _body_offset(self, status: int, headers: urllib3.HTTPHeaderDict, start: int, end: int, whole: bool) -> int:
        """Where ``start`` is in this response's body: 0 for the range asked for, ``start`` for
        the whole object (a server that ignored Range); Transient for anything else (the part
        is asked for again), never bytes written at an offset they do not belong at."""
        if status == 206:
            problem = content_range_problem(headers.get("Content-Range"), start, end, self.size)
            if problem is not None:
                raise Transient(problem)
            return 0
        if status != 200:
            raise FetchError(f"{self.entry.path}: unexpected HTTP {status} for a range request")
        length = (headers.get("Content-Length") or "").strip()
        if length.isascii() and length.isdigit() and int(length) != self.size:
            raise Transient(f"a 200 of {int(length)} bytes for a {self.size}-byte object")
        if not whole and not self._warned_unranged:
            self._warned_unranged = True
            log.warning("storage ignored Range for %s (HTTP 200, the whole object): reading each part "
                        "from the start of the body", self.entry.path)
        return start


@dataclass
class _Progress:
    """How far one part got, and when its last byte arrived."""

    pos: int
    at: float


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


def mismatch_message(entry: ManifestEntry) -> str:
    """What a reader's error says when the bytes fail the manifest digest (keeps "do not match":
    the mount drops the file's pages and strict mode refetches on it)."""
    if entry.ref is not None:
        return f"{entry.path}: {entry.ref} changed since it was logged: its bytes do not match the manifest digest"
    return f"{entry.path}: bytes from W&B do not match the manifest digest"


class FillItem:
    def __init__(self, entry: ManifestEntry, cache: ObjectCache, policy: FetchPolicy, url_fn: UrlFn,
                 http: urllib3.PoolManager, stats: FetchStats, getter: GetterFactory | None = None) -> None:
        """``getter`` replaces the signed-URL ``RangeGetter`` (reference entries: refs.py)."""
        self.entry = entry
        self.size = entry.size
        self.cache = cache
        self.policy = policy
        self.stats = stats
        self.part_size = max(CHUNK, policy.part_size)
        self.nparts = max(1, -(-self.size // self.part_size))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.present = RangeSet()
        self._parts = [TODO] * self.nparts
        self._demand: collections.deque[int] = collections.deque()
        self._waiters: list[tuple[int, int, trio.Event]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.path: Path | None = None   # the verified cache path, once done
        self._users = 0
        # Wake trio-side waiters without blocking the worker on a round trip to the loop.
        self._token = trio.lowlevel.current_trio_token()
        self.fd, self.tmp = cache.new_temp()
        cache.hold(self.fd)  # the temp file becomes the object: in use until the fill is closed
        os.ftruncate(self.fd, self.size)
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

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._users == 0 and self.done.is_set()
        if close:
            self._close_fd()

    def _close_fd(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    async def wait_range(self, start: int, end: int) -> None:
        """Return once ``[start, end)`` is on disk; raise the item's error if it failed."""
        end = min(end, self.size)
        with self._lock:
            if self.error is None and not self.present.contains(start, end):
                ev = trio.Event()
                self._waiters.append((start, end, ev))
                first, last = start // self.part_size, max(start, end - 1) // self.part_size
                for p in range(last, first - 1, -1):
                    if self._parts[p] == TODO:
                        self._demand.appendleft(p)
            else:
                ev = None
        if ev is not None:
            await ev.wait()
        if self.error is not None:
            raise self.error

    async def wait_done(self) -> Path:
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

    # ---- worker threads --------------------------------------------------------------
    def _pick(self) -> int | None:
        with self._lock:
            if self.error is not None:
                return None
            while self._demand:
                p = self._demand.popleft()
                if self._parts[p] == TODO:
                    self._parts[p] = RUNNING
                    return p
            for p, st in enumerate(self._parts):
                if st == TODO:
                    self._parts[p] = RUNNING
                    return p
        return None

    def run_worker(self) -> None:
        while (p := self._pick()) is not None:
            start = p * self.part_size
            end = min(self.size, start + self.part_size)
            try:
                self.getter.fetch(start, end, self._write)
            except BaseException as e:  # noqa: BLE001 - one failed part fails the object
                self._fail(e if isinstance(e, (BackendError, NotFound, AuthError)) else
                           FetchError(f"{self.entry.path}: {type(e).__name__}: {e}"))
                return
            with self._lock:
                self._parts[p] = DONE

    def cancel(self) -> None:
        """Stop now (the mount is stopping): waiters get EIO, the temp file is removed, and
        workers stop at their next chunk (a stalled one is abandoned by its caller)."""
        self._fail(FetchError(f"{self.entry.path}: download cancelled (the mount is stopping)"))
        self.cache.discard(self.tmp)

    def _write(self, pos: int, chunk: bytes) -> None:
        # Write and mark under one lock: the temp file can be replaced (``_move_to_new_temp``),
        # and a range marked present must be in the file readers read from.
        with self._lock:
            if self.error is not None:   # failed or cancelled: nothing more goes to disk
                raise FetchError(f"{self.entry.path}: the download was stopped")
            os.pwrite(self.fd, chunk, pos)
            if self.first_byte_s is None:
                self.first_byte_s = time.monotonic() - self.started
            self.present.add(pos, pos + len(chunk))
            ready = [w for w in self._waiters if self.present.contains(w[0], w[1])]
            if ready:
                self._waiters = [w for w in self._waiters if w not in ready]
            self._cond.notify_all()
        for _, _, ev in ready:
            self._token.run_sync_soon(ev.set)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is not None:
                return
            self.error = error
            waiters, self._waiters = self._waiters, []
            self._cond.notify_all()
        for _, _, ev in waiters:
            self._token.run_sync_soon(ev.set)

    MAX_TEMP_MOVES = 3
    """A temp file removed under the download is replaced this many times, then EIO."""

    def _commit(self, hasher: Hasher) -> Path:
        """Rename the complete temp file into the cache. Someone may have removed it (the
        SDK's ``cleanup(remove_temp=True)`` empties ``artifacts/tmp``): its bytes are still
        ours through the open descriptor, so they move to a new temp and the rename is tried
        again; no byte is fetched twice and no reader sees a hole."""
        for moves in range(self.MAX_TEMP_MOVES + 1):
            try:
                if os.fstat(self.fd).st_nlink > 0:
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
        """Copy every byte of the (unlinked) temp file into a new one and read from that.

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
            self._fail(BadBytes(mismatch_message(self.entry)))
        except BaseException as e:  # noqa: BLE001
            self._fail(e if isinstance(e, (BackendError, NotFound, AuthError)) else
                       FetchError(f"{self.entry.path}: {type(e).__name__}: {e}"))
        finally:
            if self.error is not None:
                self.cache.discard(self.tmp)
            self._token.run_sync_soon(self.done.set)
            with self._lock:
                idle = self._users == 0
            if idle:
                self._close_fd()
