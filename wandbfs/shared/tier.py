"""The shared cache tier: objects one host fetched from W&B, for every other host to read.

Three tiers in one read path: the host's own cache, this tier, W&B. The tier holds, under
its root (a bucket prefix or a directory)::

    obj/md5/ab/cdef…                 complete objects, the local cache's own keys (md5 / etag)
    wandbfs/sums/md5/ab/cdef….json   their size and the checksum of every 8 MiB part, written first
    wandbfs/fill/md5/ab/cdef…/       an object being fetched: lease.<gen> (lease.py) and
                                     part.<n>, each part as it arrived from W&B, its checksum
                                     (16 bytes) after it

Nothing unverified crosses a tier: an object is published only after the host that has it
checked it against the manifest digest, and each part read back is checked against its
checksum (xxh3-128: corruption is what it guards against, and at ~10 GB/s it costs the
readers nothing next to the manifest's md5) before a byte of it is handed on, so a
corrupted or truncated object (planted, bit rot, a half-copied file) is found before it is
served, removed, and fetched from W&B again, which replaces it. Parts in ``fill/`` are what
a filling host got from W&B, each with its checksum, so a part damaged in the store or on
the way is fetched from W&B instead; a host reading them verifies the whole file against
the manifest digest like any download.

The store is one network hop that can fail like any other: every call goes through
``_call``, which turns a failure into "not in the tier" and stops asking for
``retry_after`` seconds, with one log line each way: a host that cannot reach the tier
reads from W&B. Eviction is the store's own business (lifecycle rules, a cron job).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

import xxhash

from wandbfs.shared.lease import Lease, LeaseRecord, current_lease, holder_id
from wandbfs.shared.stores import BadData, TierError, TierStore, open_store

log = logging.getLogger(__name__)

PART = 8 << 20
"""Bytes per part in the tier (S3 needs at least 5 MiB per part to compose an object)."""

T = TypeVar("T")

__all__ = ["PART", "SharedTier", "Sums", "TierStats", "part_bounds", "part_count"]


def part_count(size: int) -> int:
    return max(1, -(-size // PART))


def part_bounds(idx: int, size: int) -> tuple[int, int]:
    return idx * PART, min(size, (idx + 1) * PART)


def part_sum(data: bytes | bytearray | memoryview) -> bytes:
    """A part's checksum (16 bytes)."""
    return xxhash.xxh3_128_digest(data)


def part_sum_hex(data: bytes | bytearray | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


@dataclass(frozen=True)
class Sums:
    """What the tier says of a complete object: its size and each part's checksum."""

    size: int
    parts: tuple[str, ...]     # xxh3-128 of each part, hex

    def encode(self) -> bytes:
        return json.dumps({"size": self.size, "part": PART, "xxh3_128": list(self.parts)}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Sums | None:
        try:
            d = json.loads(data)
            sums = cls(int(d["size"]), tuple(str(h) for h in d["xxh3_128"]))
            if int(d["part"]) != PART or len(sums.parts) != part_count(sums.size):
                return None
            return sums
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class TierStats:
    bytes_read: int = 0          # from the tier, into this host's cache
    bytes_written: int = 0       # parts and objects this host published
    objects_read: int = 0        # fills that found the complete object in the tier
    published: int = 0           # objects this host published
    bad_objects: int = 0         # objects or parts that failed a checksum or had the wrong size
    waits: int = 0               # parts waited for while another host fetched them
    errors: int = 0              # store calls that failed


class SharedTier:
    """One mount's view of the shared tier (no state shared between mounts in a process)."""

    def __init__(self, store: TierStore, *, lease_ttl: float = 30.0, retry_after: float = 30.0,
                 wait_limit: float = 30.0) -> None:
        """``wait_limit``: the longest a part is waited for while another host fetches it
        (then it is fetched from W&B here): a holder that renews but makes no progress
        cannot hold the others up longer than that."""
        self.store = store
        self.url = store.url
        self.lease_ttl = lease_ttl
        self.retry_after = retry_after
        self.wait_limit = wait_limit
        self.holder = holder_id()
        self.stats = TierStats()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False
        self._queue: queue.SimpleQueue[tuple[str, int, bytes, Callable[[], None]]] = queue.SimpleQueue()
        self._room = threading.BoundedSemaphore(self.QUEUED)
        self._publishers: list[threading.Thread] = []

    @classmethod
    def open(cls, url: str, *, timeout: float = 10.0, lease_ttl: float = 30.0,
             wait_limit: float = 30.0) -> SharedTier:
        return cls(open_store(url, timeout=timeout), lease_ttl=lease_ttl, wait_limit=wait_limit)

    # ---- the store's health -------------------------------------------------------------
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def call(self, default: T, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``, or ``default`` when the store is down or the call fails."""
        if not self.available():
            return default
        try:
            out = fn(*args)
        except BadData as e:    # the store answers; this read's bytes are worth nothing
            log.warning("shared cache: %s; not used", e)
            with self._lock:
                self.stats.bad_objects += 1
            return default
        except TierError as e:
            self._failed(e)
            return default
        if self._down:
            with self._lock:
                was, self._down = self._down, False
            if was:
                log.warning("shared cache %s answers again", self.url)
        return out

    def _failed(self, e: TierError) -> None:
        with self._lock:
            self.stats.errors += 1
            self._down_until = time.monotonic() + self.retry_after
            was, self._down = self._down, True
        if not was:
            log.warning("shared cache unreachable (%s): reading from W&B, trying it again in %gs", e,
                        self.retry_after)

    # ---- keys -------------------------------------------------------------------------
    @staticmethod
    def _sub(rel: str) -> str:
        """``obj/md5/ab/cdef`` -> ``md5/ab/cdef``."""
        return rel.split("/", 1)[1]

    def sums_key(self, rel: str) -> str:
        return f"wandbfs/sums/{self._sub(rel)}.json"

    def fill_folder(self, rel: str) -> str:
        return f"wandbfs/fill/{self._sub(rel)}"

    # ---- complete objects ---------------------------------------------------------------
    def lookup(self, rel: str, size: int) -> Sums | None:
        """The complete object's sums, if the tier has it at the right size; a wrong-sized one
        (truncated, or not what its sums say) is removed. Store failures count as absent."""
        return self.call(None, self._lookup, rel, size)

    def _lookup(self, rel: str, size: int) -> Sums | None:
        data = self.store.read(self.sums_key(rel))
        if data is None:
            return None
        sums = Sums.decode(data)
        have = self.store.size(rel)
        if have is None and sums is not None and sums.size == size:
            return None     # being published (sums go first), or removed
        if sums is None or sums.size != size or have != size:
            self._bad(rel, f"{'unreadable sums' if sums is None else f'{have} bytes'} for a {size}-byte object")
            return None
        return sums

    def object_part(self, rel: str, sums: Sums, idx: int) -> bytes | None:
        """Part ``idx`` of a complete object, checked against its checksum; ``None`` if it is gone
        or fails (then the object is removed: it will be fetched and published again)."""
        a, b = part_bounds(idx, sums.size)
        data = self.call(None, self.store.read, rel, a, b)
        if data is None:
            return None
        if len(data) != b - a or part_sum_hex(data) != sums.parts[idx]:
            self._bad(rel, f"part {idx} ({a}-{b}) fails its checksum")
            return None
        self._count_read(len(data))
        return data

    def _bad(self, rel: str, why: str) -> None:
        with self._lock:
            self.stats.bad_objects += 1
        log.warning("shared cache object %s: %s; not served, removed (it is fetched from W&B and "
                    "published again)", rel, why)
        self.drop(rel)

    def drop(self, rel: str) -> None:
        """Remove a complete object and its sums (bad, or its parts failed a digest)."""
        self.call(None, self.store.delete, rel)
        self.call(None, self.store.delete, self.sums_key(rel))

    def publish(self, rel: str, path: Path, size: int, sums: dict[int, str]) -> bool:
        """Publish this host's verified copy: sums first, then the object (composed from the
        published parts on the server when they are all there, else uploaded), then the
        parts go. ``sums``: part checksums already known (the rest are read from ``path``)."""
        return self.call(False, self._publish, rel, path, size, sums)

    def _publish(self, rel: str, path: Path, size: int, sums: dict[int, str]) -> bool:
        # Opened first and held: a local file evicted meanwhile is an OSError for the caller
        # (nothing written to the tier), never a store outage. At a low CPU priority, on a
        # thread of its own: hashing and copying a whole object must not slow this host's readers.
        def run() -> bool:
            with open(path, "rb", buffering=0) as f:
                return self._publish_open(rel, f, size, sums)
        return _low_priority(run)

    def _publish_open(self, rel: str, f: BinaryIO, size: int, sums: dict[int, str]) -> bool:
        n = part_count(size)
        digests = dict(sums)
        for idx in range(n):
            if idx not in digests:
                a, b = part_bounds(idx, size)
                digests[idx] = part_sum_hex(_pread_all(f.fileno(), b - a, a))
        self.store.write(self.sums_key(rel), Sums(size, tuple(digests[i] for i in range(n))).encode())
        folder = self.fill_folder(rel)
        present = set(self.store.names(folder))
        parts = [(f"{folder}/part.{i}", part_bounds(i, size)[1] - part_bounds(i, size)[0]) for i in range(n)]
        composed = (all(f"part.{i}" in present for i in range(n)) and self.store.compose(rel, parts)
                    and self.store.size(rel) == size)
        if not composed:
            f.seek(0)
            self.store.write_file(rel, f, size)
            with self._lock:
                self.stats.bytes_written += size
        with self._lock:
            self.stats.published += 1
        log.info("published %s to the shared cache (%d bytes, %s)", rel, size,
                 "composed from its parts" if composed else "uploaded")
        self.clear_parts(rel)
        return True

    # ---- objects being filled -------------------------------------------------------------
    BAD = memoryview(b"")
    """``fill_part``'s answer for a part that is there but damaged: fetch it elsewhere (a
    value no part's bytes can be: compared by identity)."""

    def fill_part(self, rel: str, idx: int, length: int) -> bytes | memoryview | None:
        """A part another host published while filling, checked against its checksum: its bytes,
        ``None`` if it is not there (yet), ``BAD`` if it is there and damaged (or the store's
        own checksum failed on the way)."""
        key = f"{self.fill_folder(rel)}/part.{idx}"
        try:
            data = self.call(None, self._read_checked, key)
        except _Damaged as e:
            log.warning("shared cache part %s: %s; fetching it from W&B", key, e)
            with self._lock:
                self.stats.bad_objects += 1
            return self.BAD
        if data is None:
            return None
        if len(data) != length:
            log.warning("shared cache part %s has %d bytes, not %d: fetching it from W&B", key, len(data), length)
            return self.BAD
        self._count_read(len(data))
        return data

    def _read_checked(self, key: str) -> bytes | None:
        try:
            raw = self.store.read(key)
        except BadData as e:
            raise _Damaged(str(e)) from e
        if raw is None:
            return None
        data, digest = raw[:-16], raw[-16:]
        if len(raw) < 16 or part_sum(data) != digest:
            raise _Damaged("fails its checksum")
        return data

    def put_part(self, rel: str, idx: int, data: bytes) -> None:
        """Publish a part as it arrived from W&B, for hosts waiting on this fill."""
        self.call(None, self._put_part, rel, idx, data)

    PUBLISHERS = 2
    QUEUED = 8
    """Parts (8 MiB each) waiting for a publisher; past that, the fetching worker publishes its own."""

    def put_part_soon(self, rel: str, idx: int, data: bytes, done: Callable[[], None]) -> None:
        """``put_part`` off the caller's thread, so a filling host's workers go on fetching at
        the link's speed whatever the store's write latency; ``done()`` once it is published
        (or failed). Memory stays bounded: with ``QUEUED`` parts waiting, the caller publishes
        this one itself."""
        if not self._room.acquire(blocking=False):
            try:
                self.put_part(rel, idx, data)
            finally:
                done()
            return
        with self._lock:
            if len(self._publishers) < self.PUBLISHERS:
                t = threading.Thread(target=self._publish_parts, name="wandbfs-tier-parts", daemon=True)
                self._publishers.append(t)
                t.start()
        self._queue.put((rel, idx, data, done))

    def _publish_parts(self) -> None:
        while True:
            rel, idx, data, done = self._queue.get()
            try:
                self.put_part(rel, idx, data)
            except Exception:  # noqa: BLE001 - best effort; the part is fetched elsewhere if it is missing
                log.exception("publishing part %d of %s", idx, rel)
            finally:
                self._room.release()
                done()

    def _put_part(self, rel: str, idx: int, data: bytes) -> None:
        # Created, never replaced: a part another host published first stays (the same bytes),
        # and no reader of it meets a replace half way (some S3 servers serve that badly).
        if self.store.create(f"{self.fill_folder(rel)}/part.{idx}", data + part_sum(data)):
            with self._lock:
                self.stats.bytes_written += len(data)

    def drop_part(self, rel: str, idx: int) -> None:
        """Remove a damaged published part, so the host fetching it again can publish it."""
        self.call(None, self.store.delete, f"{self.fill_folder(rel)}/part.{idx}")

    def clear_parts(self, rel: str) -> None:
        """Remove an object's published parts (it is complete, or its parts were bad)."""
        folder = self.fill_folder(rel)
        for name in self.call([], self.store.names, folder):
            if name.startswith("part."):
                self.call(None, self.store.delete, f"{folder}/{name}")

    def current_lease(self, rel: str) -> tuple[int, LeaseRecord | None] | None | bool:
        """The lease in force (see ``lease.current_lease``), or ``False`` if the store failed."""
        return self.call(False, current_lease, self.store, self.fill_folder(rel))

    def lease(self, rel: str, whole: Callable[[], bool]) -> Lease:
        return Lease(self.store, self.fill_folder(rel), self.lease_ttl, self.holder, whole)

    def _count_read(self, n: int) -> None:
        with self._lock:
            self.stats.bytes_read += n

    def note(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)


def _low_priority(fn: Callable[[], T]) -> T:
    """``fn()`` on a new thread at nice 10 (Linux sets nice per thread); a pooled thread would
    keep the nice value for whatever runs on it next, and only root may lower it again."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (OSError, AttributeError):
            pass
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            err.append(e)
    t = threading.Thread(target=run, name="wandbfs-publish", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


class _Damaged(Exception):
    """A published part failed its checksum (or the store's own)."""


def _pread_all(fd: int, count: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < count:
        chunk = os.pread(fd, count - len(out), offset + len(out))
        if not chunk:
            raise OSError(f"short read at byte {offset + len(out)}")
        out += chunk
    return bytes(out)
