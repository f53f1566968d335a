"""Ranged GETs of one object, with the retry rules every download shares.

``RangeGetter`` is how bytes come from a signed storage URL (or an http reference): every
answer is checked against the range asked for before a byte is delivered, a retry resumes
after the last byte delivered, storage refusing a URL gets a fresh one from W&B, and a
part that storage leaves waiting ``read_timeout`` seconds in all, over its retries, fails.
The fill engine (item.py) and the uncached stream (stream.py) both take their bytes from a
``Getter``; reference sources (refs.py) provide their own. ``FetchPolicy`` holds the
knobs all of them read.
"""

from __future__ import annotations

import errno
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import urllib3

from wandbfs.fill.errors import FetchError, NoSpace, Transient, UrlRefused
from wandbfs.model.retry_after import next_wait, retry_after_s
from wandbfs.model.manifest import ManifestEntry
from wandbfs.model.ranges import content_range_problem
from wandbfs.sdk.client import AuthError, NotFound

log = logging.getLogger(__name__)

CHUNK = 1 << 20
STREAM_CHUNK = 256 << 10
"""Bytes read from a response before they are handed on: small, so a read waits for little more than its range."""


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
    adaptive: bool = True             # fetch what is read (+ read-ahead); False: every open fills the whole file
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
    bytes_from_shared: int = 0        # bytes a fill took from the shared cache tier (--shared-cache)


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
                backoff = min(p.backoff_max, p.backoff_base * 2 ** (transient - 1)) * (0.5 + random.random() / 2)
                # Storage said when to come back: that wait is storage's, so it counts against
                # the read timeout, and one past it fails now (EIO in a bound).
                delay = next_wait(e.retry_after, backoff, waited, p.read_timeout)
                if delay is None:
                    raise FetchError(f"{self.entry.path}: storage asks to retry after {e.retry_after:g}s, past "
                                     f"the read timeout ({p.read_timeout:g}s): {e}") from e
                if e.retry_after is not None:
                    waited += delay
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
                raise Transient(f"HTTP {r.status}", retry_after_s(r.headers.get("Retry-After")))
            skip = self._body_offset(r.status, r.headers, start, end, whole)
            for chunk in r.stream(STREAM_CHUNK, decode_content=False):
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


