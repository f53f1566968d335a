"""The fetcher: bytes of one manifest entry into the object cache, verified, exactly once.

A read that misses the cache lands here. The download runs in a worker thread with our own
HTTP client (urllib3: pooled connections, explicit connect/read timeouts, no hidden
retries; the SDK's blob download retries a 500 for about 20 minutes). Bytes are hashed
while they stream into a temp file, and the object appears in the cache only through an
atomic rename after its md5 (or xxh128) matched the manifest. Concurrent first reads of one
object share one download: in this process by single flight, across processes (a second
mount, the SDK) by a lock file per object.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio
import urllib3

from .cache import DigestMismatch, Hasher, ObjectCache
from .catalog import SingleFlight
from .manifest import ManifestEntry
from .wandb_client import AuthError, BackendError, NotFound, VersionDetail

log = logging.getLogger(__name__)

UrlSource = Callable[[VersionDetail, str, bool], Awaitable[str]]


class FetchError(BackendError):
    """A download that failed after its retries (EIO for the reader)."""


class _UrlRefused(Exception):
    pass


class _Transient(Exception):
    pass


@dataclass
class FetchPolicy:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0        # a stalled body is abandoned after this
    attempts: int = 5                 # transient failures (5xx, 429, resets, stalls)
    digest_attempts: int = 2          # a digest mismatch is fetched once more, then EIO
    url_refreshes: int = 2            # expired signed URL: ask W&B for a fresh one
    backoff_base: float = 0.2
    backoff_max: float = 5.0


@dataclass
class FetchStats:
    downloads: int = 0
    bytes_downloaded: int = 0
    cache_hits: int = 0
    digest_failures: int = 0
    retries: int = 0
    url_refreshes: int = 0
    in_flight: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Fetcher:
    def __init__(self, cache: ObjectCache, url_source: UrlSource, *, policy: FetchPolicy | None = None,
                 limiter: trio.CapacityLimiter | None = None) -> None:
        self.cache = cache
        self.url_source = url_source
        self.policy = policy or FetchPolicy()
        self.limiter = limiter or trio.CapacityLimiter(8)
        self.stats = FetchStats()
        self._flight = SingleFlight()
        self._verified: set[Path] = set()
        self._http = urllib3.PoolManager(num_pools=4, maxsize=16, retries=False)

    async def ensure(self, detail: VersionDetail, entry: ManifestEntry) -> Path:
        """The verified cache path of ``entry``'s bytes, downloading them if needed."""
        if entry.ref:
            raise FetchError(f"{entry.path}: reference entries ({entry.ref_scheme}) are not served yet")
        path = self.cache.lookup(entry)
        if path is not None and path in self._verified:
            self.stats.cache_hits += 1
            return path
        key = self.cache.path_for(entry)
        return await self._flight.run(key, lambda: self._ensure(detail, entry))

    async def _ensure(self, detail: VersionDetail, entry: ManifestEntry) -> Path:
        self.stats.in_flight += 1
        try:
            return await trio.to_thread.run_sync(self._ensure_blocking, detail, entry, limiter=self.limiter)
        finally:
            self.stats.in_flight -= 1

    # ---- worker thread -----------------------------------------------------------------
    def _ensure_blocking(self, detail: VersionDetail, entry: ManifestEntry) -> Path:
        with self.cache.object_lock(entry):
            path = self.cache.lookup(entry)
            if path is not None:
                # A hit written by the SDK or another mount: the SDK never verifies what it
                # downloads, so we check once per mount before serving it.
                if path in self._verified or self.cache.verify_file(path, entry):
                    self._verified.add(path)
                    self.stats.cache_hits += 1
                    return path
                log.warning("cached object for %s fails its digest; fetching again", entry.path)
                os.unlink(path)
            path = self._download_verified(detail, entry)
            self._verified.add(path)
            return path

    def _url(self, detail: VersionDetail, path: str, refresh: bool) -> str:
        return trio.from_thread.run(self.url_source, detail, path, refresh)

    def _download_verified(self, detail: VersionDetail, entry: ManifestEntry) -> Path:
        p = self.policy
        refresh = False
        refreshes = digest_failures = transient = 0
        while True:
            url = self._url(detail, entry.path, refresh)
            refresh = False
            try:
                return self._download_once(url, entry)
            except _UrlRefused as e:
                refreshes += 1
                self.stats.url_refreshes += 1
                if refreshes > p.url_refreshes:
                    raise AuthError(f"{entry.path}: storage refused the URL: {e}") from e
                log.info("signed URL for %s refused (%s); refreshing", entry.path, e)
                refresh = True
            except DigestMismatch as e:
                digest_failures += 1
                self.stats.digest_failures += 1
                log.error("digest mismatch for %s in %s: %s", entry.path, detail.name, e)
                if digest_failures >= p.digest_attempts:
                    raise FetchError(f"{entry.path}: bytes from W&B do not match the manifest digest") from e
            except _Transient as e:
                transient += 1
                self.stats.retries += 1
                if transient >= p.attempts:
                    raise FetchError(f"{entry.path}: download failed after {transient} attempts: {e}") from e
                delay = min(p.backoff_max, p.backoff_base * 2 ** (transient - 1)) * (0.5 + random.random() / 2)
                log.warning("download of %s failed (%s); retry %d in %.2fs", entry.path, e, transient, delay)
                time.sleep(delay)

    def _download_once(self, url: str, entry: ManifestEntry) -> Path:
        p = self.policy
        fd, tmp = self.cache.new_temp()
        hasher = Hasher.for_entry(entry)
        try:
            try:
                r = self._http.request("GET", url, preload_content=False, redirect=True,
                                       timeout=urllib3.Timeout(connect=p.connect_timeout, read=p.read_timeout))
            except urllib3.exceptions.HTTPError as e:
                raise _Transient(f"{type(e).__name__}: {e}") from e
            complete = False
            try:
                if r.status in (401, 403):
                    raise _UrlRefused(f"HTTP {r.status}")
                if r.status == 404:
                    raise NotFound(f"{entry.path}: storage has no such object (HTTP 404)")
                if r.status == 429 or r.status >= 500 or r.status == 408:
                    raise _Transient(f"HTTP {r.status}")
                if r.status != 200:
                    raise FetchError(f"{entry.path}: unexpected HTTP {r.status}")
                n = 0
                with os.fdopen(fd, "wb", closefd=True) as f:
                    fd = -1
                    for chunk in r.stream(1 << 20, decode_content=False):
                        hasher.update(chunk)
                        f.write(chunk)
                        n += len(chunk)
                if n != entry.size:
                    raise _Transient(f"short body: {n} of {entry.size} bytes")
                complete = True
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise _Transient(f"{type(e).__name__}: {e}") from e
            finally:
                if not complete:
                    # Unread bytes would poison the next request on this connection.
                    r.close()
                r.release_conn()
            path = self.cache.commit(tmp, entry, hasher=hasher)
            self.stats.downloads += 1
            self.stats.bytes_downloaded += entry.size
            return path
        except BaseException:
            if fd >= 0:
                os.close(fd)
            self.cache.discard(tmp)
            raise

    def close(self) -> None:
        self._http.clear()


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


__all__: list[Any] = ["Fetcher", "FetchPolicy", "FetchError", "FetchStats"]
